"""`toy`: a tiny deterministic torch scorer for tests and pipeline benchmarks.

Words are hashed (crc32, stable across processes) into a seeded random embedding table; a text
is the mean of its word vectors passed through a small tanh layer; the score is the inner
product of the query and item vectors. It is cheap, needs no weights on disk, and gives a
low-rank-plus-nonlinearity score matrix, so figures measured with it measure the pipeline, not
the model. Options: ``dim`` (16), ``vocab`` (4096), ``seed`` (0). Not a relevance model.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from curindex.config import ScorerConfig

_WORD = re.compile(r"\w+")


class ToyScorer:
    def __init__(self, cfg: ScorerConfig, *, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.cfg = cfg
        dim = int(cfg.options.get("dim", 16))
        self.vocab = int(cfg.options.get("vocab", 4096))
        gen = torch.Generator().manual_seed(int(cfg.options.get("seed", 0)))
        self.table = torch.randn(self.vocab, dim, generator=gen, dtype=torch.float64)
        self.proj = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / dim**0.5

    def _words(self, text: str, limit: int) -> list[int]:
        words = _WORD.findall(text.lower())[:limit]
        return [zlib.crc32(w.encode()) % self.vocab for w in words] or [0]

    def truncated(self, texts: Sequence[str], *, role: str) -> np.ndarray:
        limit = self.cfg.max_query_tokens if role == "query" else self.cfg.max_item_tokens
        return np.array([len(_WORD.findall(t)) > limit for t in texts], dtype=bool)

    def embed(self, texts: Sequence[str], limit: int) -> torch.Tensor:
        """[len(texts), dim] float64 text vectors."""
        bags = [self._words(t, limit) for t in texts]
        offsets = torch.tensor([0] + [len(b) for b in bags[:-1]]).cumsum(0)
        flat = torch.tensor([w for b in bags for w in b])
        mean = torch.nn.functional.embedding_bag(flat, self.table, offsets, mode="mean")
        return torch.tanh(mean @ self.proj)

    @torch.inference_mode()
    def score_block(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        q = self.embed(queries, self.cfg.max_query_tokens)
        i = self.embed(items, self.cfg.max_item_tokens)
        return (q @ i.T).to(torch.float32).numpy()
