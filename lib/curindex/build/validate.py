"""Validate stage: Top-k-Recall@budget of the built index, distributed.

The test queries were scored against every item in the score pass, so their exact scores are
columns ``k_q ..`` of every item's score row. Each partition computes, per test query, its
exact top ``max(ks)`` items and its top ``max(budgets) - k_i`` non-anchor items by the CUR
estimate ``c . (G h)``; Spark keeps the global best of each list with a window, and only those
shortlists (``n_test x (max k + max budget)`` rows) reach the driver, never H.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from curindex.evaluate import QueryTops, figure_keys, recall_from_tops

TOPS_SCHEMA = "t int, kind int, item_id string, exact double, approx double"
EXACT, CAND = 0, 1  # kinds of shortlist rows


def _tops_fn(g: np.ndarray, c: np.ndarray, k_q: int, anchors: list[str], k_max: int,
             m_max: int):
    """mapInArrow function: per batch and test query, the best rows of each shortlist.

    g: [k_i, k_q]; c: [k_i, n_test] exact scores of the test queries on the anchor items.
    """
    anchor_set = set(anchors)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            ids = np.array(batch.column("item_id").to_pylist(), dtype=object)
            flat = batch.column("scores").values.to_numpy(zero_copy_only=False)
            s = flat.reshape(n, -1).astype(np.float64)  # [n, k_q + n_test]
            exact = s[:, k_q:]  # [n, n_test]
            approx = (s[:, :k_q] @ g.T) @ c  # [n, n_test]
            approx_na = np.where([i in anchor_set for i in ids], -np.inf, 0.0)[:, None] + approx
            cols: dict[str, list] = {"t": [], "kind": [], "item_id": [], "exact": [],
                                     "approx": []}
            for kind, score, limit in ((EXACT, exact, k_max), (CAND, approx_na, m_max)):
                m = min(limit, n)
                if m <= 0:
                    continue
                # the m best per column (unordered); ties at the cut are settled by the window
                top = np.argpartition(-score, m - 1, axis=0)[:m] if m < n else np.tile(
                    np.arange(n)[:, None], (1, score.shape[1]))
                for t in range(score.shape[1]):
                    rows = top[:, t][np.isfinite(score[top[:, t], t])]
                    cols["t"] += [t] * len(rows)
                    cols["kind"] += [kind] * len(rows)
                    cols["item_id"] += ids[rows].tolist()
                    cols["exact"] += exact[rows, t].tolist()
                    cols["approx"] += approx[rows, t].tolist()
            yield pa.RecordBatch.from_pydict(cols, schema=pa.schema([
                ("t", pa.int32()), ("kind", pa.int32()), ("item_id", pa.string()),
                ("exact", pa.float64()), ("approx", pa.float64())]))

    return run


def validate_recall(
    spark: SparkSession,
    scores: DataFrame,
    *,
    g: np.ndarray,
    anchor_rows: np.ndarray,
    anchor_ids: list[str],
    k_q: int,
    ks: list[int],
    budgets: list[int],
) -> dict[str, float]:
    """Top-k-Recall@budget for every sensible (k, budget); {} when there are no test queries.

    anchor_rows: [k_i, k_q + n_test] scores of the anchor items (test part = query vectors).
    """
    c = np.asarray(anchor_rows, dtype=np.float64)[:, k_q:]  # [k_i, n_test]
    n_test = c.shape[1]
    pairs = figure_keys(ks, budgets, len(anchor_ids))
    if n_test == 0 or not pairs:
        return {}
    k_max = max(k for k, _ in pairs)
    m_max = max(b for _, b in pairs) - len(anchor_ids)
    spark.sparkContext.setJobDescription("curindex: validate recall")
    try:
        shortlist = scores.select("item_id", "scores").mapInArrow(
            _tops_fn(g, c, k_q, anchor_ids, k_max, m_max), TOPS_SCHEMA
        )
        order = F.when(F.col("kind") == EXACT, F.col("exact")).otherwise(F.col("approx"))
        w = Window.partitionBy("t", "kind").orderBy(order.desc(), F.col("item_id"))
        limit = F.when(F.col("kind") == EXACT, k_max).otherwise(m_max)
        rows = (shortlist.withColumn("rank", F.row_number().over(w))
                .where(F.col("rank") <= limit).toArrow().to_pydict())
    finally:
        spark.sparkContext.setJobDescription(None)
    lists: dict[tuple[int, int], list[tuple[int, str, float]]] = {}
    for t, kind, iid, ex, rank in zip(rows["t"], rows["kind"], rows["item_id"], rows["exact"],
                                      rows["rank"], strict=True):
        lists.setdefault((t, kind), []).append((rank, iid, ex))
    tops = []
    for t in range(n_test):
        exact_rows = sorted(lists.get((t, EXACT), []))
        cand_rows = sorted(lists.get((t, CAND), []))
        tops.append(QueryTops(
            exact_ids=[r[1] for r in exact_rows],
            cand_ids=[r[1] for r in cand_rows],
            cand_exact=np.array([r[2] for r in cand_rows], dtype=np.float64),
            anchor_ids=list(anchor_ids),
            anchor_exact=c[:, t],
        ))
    return recall_from_tops(tops, pairs)
