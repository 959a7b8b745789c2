"""Score-driven anchor items (`[anchors] items = "leverage"`), chosen after the score pass.

Every item is scored against the anchor queries anyway, so choosing anchor items from those
scores costs no second scoring pass: one pass over the scores sums ``H H^T`` ([k_q, k_q], one
partial sum per partition), a second computes every item's leverage score and keeps the
``pool`` best rows; column-pivoted QR on the driver picks ``k_i`` of them
(``curindex.kinds.anchor_select``). Only k_q x k_q sums and ``pool`` score rows reach the driver.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curindex.kinds import scorerows
from curindex.kinds.anchor_select import leverage_projector, leverage_scores, pivoted_qr_columns

POOL_FACTOR = 4  # leverage pool = POOL_FACTOR x k_i items, from which QR picks k_i


def _h(batch: pa.RecordBatch, k_q: int) -> np.ndarray:
    """[n, k_q] anchor-query scores of a batch of score rows."""
    return scorerows.matrix(batch.column("scores"))[:, :k_q].astype(np.float64)


def score_gram(scores: DataFrame, k_q: int) -> np.ndarray:
    """``H H^T`` [k_q, k_q] summed over every item."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        gram = np.zeros((k_q, k_q))
        for batch in batches:
            if batch.num_rows:
                h = _h(batch, k_q)
                gram += h.T @ h
        yield pa.RecordBatch.from_pydict({"gram": [gram.reshape(-1).tolist()]})

    rows = scores.select("scores").mapInArrow(run, "gram array<double>").collect()
    return sum(np.array(r["gram"]).reshape(k_q, k_q) for r in rows)


def leverage_anchor_items(scores: DataFrame, *, k_q: int, k_i: int
                          ) -> tuple[list[str], list[str]]:
    """(ids, texts) of k_i anchor items chosen by leverage then pivoted QR, deterministic for
    the scores (ties broken by item id)."""
    projector = leverage_projector(score_gram(scores, k_q), rank=k_i)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                lev = leverage_scores(projector, _h(batch, k_q))
                yield pa.RecordBatch.from_arrays(
                    [batch.column("item_id"), pa.array(lev, type=pa.float64())],
                    names=["item_id", "leverage"])

    pool = POOL_FACTOR * k_i
    best = (scores.select("item_id", "scores").mapInArrow(run, "item_id string, leverage double")
            .orderBy(F.col("leverage").desc(), F.col("item_id")).limit(pool))
    rows = (scores.join(best, "item_id").orderBy(F.col("leverage").desc(), F.col("item_id"))
            .select("item_id", "text", "scores").collect())
    h_pool = np.array([r["scores"][:k_q] for r in rows], dtype=np.float64).T  # [k_q, pool]
    chosen = pivoted_qr_columns(h_pool, min(k_i, len(rows)))
    return [rows[j]["item_id"] for j in chosen], [rows[j]["text"] for j in chosen]
