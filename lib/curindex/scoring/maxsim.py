"""`maxsim-minilm`: late-interaction (MaxSim) scoring over all-MiniLM-L6-v2 token embeddings.

score(q, i) = mean over the query's tokens of the max cosine similarity to the item's tokens.
Per-token embeddings are L2-normalised; [CLS], [SEP] and padding are dropped; queries read at
most `max_query_tokens`, items at most `max_item_tokens` tokens (special tokens included).

Query token embeddings are cached by text, so the anchor and test queries are encoded once per
worker and reused for every block of items; a block's scores come from one matrix product per
chunk of items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from curindex.config import ScorerConfig
from curindex.scoring.base import default_minilm_path
from curindex.scoring.tokens import encoded_lengths

# Items per similarity chunk: bounds the [q_tokens, chunk * item_tokens] product to ~100 MB.
_ITEM_CHUNK_TOKENS = 8192


class MaxSimScorer:
    """Late interaction over a BERT-style encoder read from a local directory."""

    def __init__(self, cfg: ScorerConfig, *, fingerprint: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = cfg.path or str(default_minilm_path())
        self.fingerprint = fingerprint
        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        tok = self.tokenizer
        # Only [CLS], [SEP] and padding are dropped; [UNK] carries content.
        special = (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
        self._special = torch.tensor(sorted({t for t in special if t is not None}))
        self._query_cache: dict[str, torch.Tensor] = {}  # text -> [tokens, dim], normalised

    def truncated(self, texts: Sequence[str], *, role: str) -> np.ndarray:
        limit = self.cfg.max_query_tokens if role == "query" else self.cfg.max_item_tokens
        return encoded_lengths(self.tokenizer, texts) > limit

    @torch.inference_mode()
    def _encode(self, texts: Sequence[str], max_len: int) -> list[torch.Tensor]:
        """Normalised token embeddings per text, special tokens and padding dropped."""
        bs = self.cfg.batch_size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        result: list[torch.Tensor | None] = [None] * len(texts)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            )
            hidden = self.model(**enc).last_hidden_state  # [b, t, dim]
            keep = enc["attention_mask"].bool() & ~torch.isin(enc["input_ids"], self._special)
            hidden = torch.nn.functional.normalize(hidden, dim=-1)
            for row, i in enumerate(idx):
                result[i] = hidden[row][keep[row]].contiguous()
        return [r for r in result if r is not None]

    def _queries(self, queries: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded query token embeddings [q, tq, dim] and a validity mask [q, tq]."""
        missing = [q for q in dict.fromkeys(queries) if q not in self._query_cache]
        if missing:
            for text, emb in zip(
                missing, self._encode(missing, self.cfg.max_query_tokens), strict=True
            ):
                self._query_cache[text] = emb
        return _pad([self._query_cache[q] for q in queries])

    @torch.inference_mode()
    def score_block(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        q_emb, q_mask = self._queries(queries)  # [q, tq, d], [q, tq]
        n_q, t_q, dim = q_emb.shape
        q_flat = q_emb.reshape(n_q * t_q, dim)
        q_len = q_mask.sum(1).clamp(min=1).to(q_emb.dtype)  # [q]
        item_embs = self._encode(items, self.cfg.max_item_tokens)
        scores = np.empty((n_q, len(items)), dtype=np.float32)
        chunk = max(1, _ITEM_CHUNK_TOKENS // max(1, self.cfg.max_item_tokens))
        for start in range(0, len(items), chunk):
            i_emb, i_mask = _pad(item_embs[start : start + chunk])  # [c, ti, d], [c, ti]
            n_c, t_i, _ = i_emb.shape
            sim = (q_flat @ i_emb.reshape(n_c * t_i, dim).T).view(n_q, t_q, n_c, t_i)
            sim = sim.masked_fill(~i_mask.view(1, 1, n_c, t_i), -2.0)
            best = sim.amax(dim=3)  # [q, tq, c]
            # An item with no content tokens scores 0 rather than -2.
            best = torch.where(i_mask.any(1).view(1, 1, n_c), best, torch.zeros_like(best))
            total = (best * q_mask.unsqueeze(2).to(best.dtype)).sum(1)  # [q, c]
            scores[:, start : start + n_c] = (total / q_len.unsqueeze(1)).numpy()
        return scores


def _pad(embs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length [t, d] tensors into [n, max_t, d] with zeros and a mask [n, max_t]."""
    dim = embs[0].shape[1] if embs else 1
    max_t = max((e.shape[0] for e in embs), default=1) or 1
    out = torch.zeros(len(embs), max_t, dim)
    mask = torch.zeros(len(embs), max_t, dtype=torch.bool)
    for i, e in enumerate(embs):
        out[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = True
    return out, mask
