"""A scorer that returns entries of a precomputed exact score matrix (bench/quality.py).

`options.scores`: a `.npy` [n_queries, n_items] of the real model's scores; `options.texts`: a
JSON `{"items": [...], "queries": [...]}` naming its rows and columns. A query it does not know
(a sparse build's synthetic training queries: each is scored against a few items only) is
scored by the real model itself, `options.teacher_kind` with `options.teacher_path`, never
guessed; without a teacher such a query is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class CachedScorer:
    def __init__(self, cfg) -> None:
        self.s = np.load(cfg.options["scores"], mmap_mode="r", allow_pickle=False)
        names = json.loads(Path(cfg.options["texts"]).read_text(encoding="utf-8"))
        self.item_col = {t: j for j, t in enumerate(names["items"])}
        self.query_row = {t: i for i, t in enumerate(names["queries"])}
        self.teacher_kind = cfg.options.get("teacher_kind", "")
        self.teacher_path = cfg.options.get("teacher_path", "")
        self._teacher = None

    def score_block(self, queries, items) -> np.ndarray:
        try:
            cols = [self.item_col[t] for t in items]
        except KeyError as e:
            raise KeyError(f"cached scorer: no exact score for item {e.args[0]!r:.80}") from e
        out = np.empty((len(queries), len(items)), dtype=np.float32)
        known = [i for i, q in enumerate(queries) if q in self.query_row]
        if known:
            rows = [self.query_row[queries[i]] for i in known]
            out[known] = np.asarray(self.s[np.ix_(rows, cols)], dtype=np.float32)
        unknown = [i for i, q in enumerate(queries) if q not in self.query_row]
        if unknown:
            out[unknown] = self.teacher().score_block([queries[i] for i in unknown], items)
        return out

    def score_pairs(self, queries, items) -> np.ndarray:
        """Aligned pairs: known queries from the matrix, the rest by the teacher's own pair
        scoring (MaxSim encodes each distinct text once)."""
        from curindex.scoring.base import score_pairs

        out = np.empty(len(queries), dtype=np.float32)
        known = [j for j, q in enumerate(queries) if q in self.query_row]
        if known:
            try:
                cols = [self.item_col[items[j]] for j in known]
            except KeyError as e:
                raise KeyError(f"cached scorer: no exact score for item {e.args[0]!r:.80}") from e
            rows = [self.query_row[queries[j]] for j in known]
            out[known] = np.asarray(self.s[rows, cols], dtype=np.float32)
        unknown = [j for j, q in enumerate(queries) if q not in self.query_row]
        if unknown:
            out[unknown] = score_pairs(self.teacher(), [queries[j] for j in unknown],
                                       [items[j] for j in unknown], where="the bench's teacher")
        return out

    def teacher(self):
        if self._teacher is None:
            if not self.teacher_kind:
                raise KeyError("cached scorer: a query without an exact score, and no teacher "
                               "to score it")
            from curindex.config import ScorerConfig
            from curindex.scoring.base import build_scorer

            self._teacher = build_scorer(ScorerConfig(kind=self.teacher_kind,
                                                      path=self.teacher_path))
        return self._teacher


def cached(cfg) -> CachedScorer:
    return CachedScorer(cfg)
