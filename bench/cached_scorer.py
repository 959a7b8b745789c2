"""A scorer that returns entries of a precomputed exact score matrix (bench/quality.py).

`options.scores`: a `.npy` [n_queries, n_items] of the real model's scores; `options.texts`: a
JSON `{"items": [...], "queries": [...]}` naming its rows and columns. A text it does not know
is an error (it would have no exact score), so a bench run can never fall back on a guess.
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

    def score_block(self, queries, items) -> np.ndarray:
        try:
            rows = [self.query_row[q] for q in queries]
            cols = [self.item_col[t] for t in items]
        except KeyError as e:
            raise KeyError(f"cached scorer: no exact score for text {e.args[0]!r:.80}") from e
        return np.asarray(self.s[np.ix_(rows, cols)], dtype=np.float32)


def cached(cfg) -> CachedScorer:
    return CachedScorer(cfg)
