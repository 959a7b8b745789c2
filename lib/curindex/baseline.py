"""The bi-encoder baseline: mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings
(the sentence-transformers recipe of that model), compared by inner product.

Retrieve-and-rerank with it is what a user would do without curindex: take the top `budget`
items by embedding similarity and re-rank them with the exact model, `budget` calls per query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curindex.scoring.models import default_minilm_path

MAX_TOKENS = 256  # the model's max_seq_length in its sentence-transformers config


class BiEncoder:
    def __init__(self, path: str = "", *, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = path or str(default_minilm_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32 unit vectors."""
        import torch

        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=MAX_TOKENS, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state  # [b, t, d]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(mean, dim=-1).numpy()
        return out


_CACHE: dict[str, BiEncoder] = {}


def get_biencoder(path: str = "") -> BiEncoder:
    """This process's bi-encoder (built once per Python worker)."""
    if path not in _CACHE:
        _CACHE[path] = BiEncoder(path)
    return _CACHE[path]
