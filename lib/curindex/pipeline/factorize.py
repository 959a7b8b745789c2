"""Factorize stage: gather the intersection matrix on the driver and pseudo-invert it.

Only the k_i anchor items' score rows are collected (k_i x (k_q + n_test) floats), never H.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curindex.errors import FactorizeError
from curindex.kinds.cur import Factorization, solve_g


def gather_anchor_rows(scores: DataFrame, anchor_item_ids: list[str]) -> np.ndarray:
    """Score rows of the anchor items, in anchor order: [k_i, n_scored_queries] float64."""
    rows = {
        r["item_id"]: r["scores"]
        for r in scores.where(F.col("item_id").isin(anchor_item_ids))
        .select("item_id", "scores")
        .collect()
    }
    missing = [i for i in anchor_item_ids if i not in rows]
    if missing:
        raise FactorizeError(f"anchor items missing from the scores: {missing[:5]}")
    return np.array([rows[i] for i in anchor_item_ids], dtype=np.float64)


def factorize(anchor_rows: np.ndarray, *, k_q: int, rcond: float, min_rank: int) -> Factorization:
    """G from the anchor rows: U [k_q, k_i] is their anchor-query part, transposed."""
    u = anchor_rows[:, :k_q].T
    return solve_g(u, rcond=rcond, min_rank=min_rank)
