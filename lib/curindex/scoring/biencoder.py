"""The bi-encoder: mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings (the
sentence-transformers recipe of that model), compared by inner product.

Retrieve-and-rerank with it is what a user would do without curindex (the ``bi-rerank``
method, the baseline every build measures), and its top items seed the ``bi-seeded`` method.
The encoder is read by ``curindex.scoring.bert`` (no transformers model classes, so a Python
worker builds it in a fraction of a second); a checkpoint those modules do not read exactly
goes to transformers' AutoModel, with the same embeddings.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curindex.scoring.models import default_minilm_path, model_files_digest

MAX_TOKENS = 256  # the model's max_seq_length in its sentence-transformers config
BI_DIM = 384  # all-MiniLM-L6-v2's embedding size
BATCH_SIZE = 64


class BiEncoder:
    def __init__(self, path: str = "", *, batch_size: int = BATCH_SIZE) -> None:

        from curindex.scoring import bert
        from curindex.scoring.tokens import load_tokenizer

        path = path or str(default_minilm_path())
        self.tokenizer = load_tokenizer(path)
        model, self.encoder, self.fused = bert.load_encoder(path)
        self.dim = int(model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32 unit vectors."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        tokens = self.tokenizer.ids(list(texts), special=True, max_length=MAX_TOKENS)
        order = np.argsort([len(t) for t in tokens], kind="stable")  # less padding
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(tokens[i]) for i in idx)
                ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
                for row, i in enumerate(idx):
                    ids[row, : len(tokens[i])] = tokens[i]
                lengths = np.array([len(tokens[i]) for i in idx])
                mask = np.arange(width)[None, :] < lengths[:, None]
                hidden = self._hidden(ids, mask).float()  # [b, t, d]
                m = torch.from_numpy(mask).unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(mean, dim=-1).numpy()
        return out

    def _hidden(self, ids: np.ndarray, mask: np.ndarray):
        import torch

        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        if self.fused:
            return self.encoder(ids_t, None if mask.all() else mask_t)
        return self.encoder(input_ids=ids_t, attention_mask=mask_t.long()).last_hidden_state


_CACHE: dict[str, BiEncoder] = {}


def get_biencoder(path: str = "") -> BiEncoder:
    """This process's bi-encoder (built once per Python worker)."""
    if path not in _CACHE:
        _CACHE[path] = BiEncoder(path)
    return _CACHE[path]


@functools.cache
def biencoder_fingerprint(path: str = "") -> str:
    """A digest of the bi-encoder's weights and recipe: embeddings computed under one
    fingerprint are interchangeable."""
    d = Path(path) if path else default_minilm_path()
    recipe = f"mean-pooled,l2,max_tokens={MAX_TOKENS};"
    digest = model_files_digest(d, what="bi-encoder model")
    return "sha256:" + hashlib.sha256((recipe + digest).encode()).hexdigest()[:32]
