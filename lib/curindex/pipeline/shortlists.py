"""Plain-CUR recall of candidate cutoffs, distributed (``[factorize] tune``).

The test queries were scored against every item in the score pass, so their exact scores are
columns ``k_q ..`` of every item's score row. One pass over the scores computes, per partition
and test query, two shortlists: the exact top ``max(ks)`` items and the top
``max(budgets) - k_i`` non-anchor items by the CUR estimate ``c . (G h)`` for a candidate G.
Spark keeps the global best of each list with a window; only the shortlists reach the driver,
never H.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from curindex.kinds import scorerows
from curindex.quality.evaluate import QueryTops, recall_from_tops
from curindex.quality.figures import Figure

TOPS_SCHEMA = "t int, kind int, item_id string, exact double, score double"
EXACT, CAND = 0, 1  # kinds of shortlist rows
_TOPS_ARROW = pa.schema([("t", pa.int32()), ("kind", pa.int32()), ("item_id", pa.string()),
                         ("exact", pa.float64()), ("score", pa.float64())])


@dataclass(frozen=True)
class Shortlists:
    """Per test query: (item ids, exact scores), best first, for each kind."""

    exact: list[tuple[list[str], np.ndarray]]
    cand: list[tuple[list[str], np.ndarray]]  # by CUR estimate, non-anchor


def _best(score: np.ndarray, m: int) -> np.ndarray:
    """Row indices of the m best of each column, unordered: [m, n_cols]."""
    n = score.shape[0]
    if m >= n:
        return np.tile(np.arange(n)[:, None], (1, score.shape[1]))
    return np.argpartition(-score, m - 1, axis=0)[:m]


def _tops_fn(g: np.ndarray, c: np.ndarray, k_q: int, anchors: list[str], limits: dict,
             first: int):
    """mapInArrow function: per batch and test query, the best rows of each shortlist.

    g: [k_i, k_q]; c: [k_i, n_test] exact scores of the test queries on the anchor items, the
    queries of score columns ``first .. first + n_test``;
    """
    anchor_set = set(anchors)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            ids = np.array(batch.column("item_id").to_pylist(), dtype=object)
            s = scorerows.matrix(batch.column("scores")).astype(np.float64)  # [n, k_q + n_test]
            exact = s[:, first : first + c.shape[1]]  # [n, n_test]
            is_anchor = np.fromiter((i in anchor_set for i in ids), dtype=bool, count=n)
            ranked = {
                EXACT: exact,
                CAND: np.where(is_anchor[:, None], -np.inf, (s[:, :k_q] @ g.T) @ c),
            }
            cols: dict[str, list] = {name: [] for name in _TOPS_ARROW.names}
            for kind, score in ranked.items():
                top = _best(score, limits[kind])
                for t in range(score.shape[1]):
                    rows = top[:, t][np.isfinite(score[top[:, t], t])]
                    cols["t"] += [t] * len(rows)
                    cols["kind"] += [kind] * len(rows)
                    cols["item_id"] += ids[rows].tolist()
                    cols["exact"] += exact[rows, t].tolist()
                    cols["score"] += score[rows, t].tolist()
            yield pa.RecordBatch.from_pydict(cols, schema=_TOPS_ARROW)

    return run


def shortlists(
    spark: SparkSession,
    scores: DataFrame,
    *,
    g: np.ndarray,
    c: np.ndarray,
    anchor_ids: list[str],
    k_q: int,
    k_max: int,
    m_max: int,
    first: int | None = None,
) -> Shortlists:
    """The three shortlists of every test query (see the module docstring). The test queries
    are the score columns ``first ..`` (default k_q: every query after the anchors)."""
    n_test = c.shape[1]
    limits = {EXACT: k_max, CAND: m_max}
    cols = ["item_id", "scores"]
    shortlist = scores.select(*cols).mapInArrow(
        _tops_fn(g, c, k_q, anchor_ids, limits, k_q if first is None else first),
        TOPS_SCHEMA)
    w = Window.partitionBy("t", "kind").orderBy(F.col("score").desc(), F.col("item_id"))
    limit = F.when(F.col("kind") == EXACT, k_max).otherwise(m_max)
    rows = (shortlist.withColumn("rank", F.row_number().over(w))
            .where(F.col("rank") <= limit).toArrow().to_pydict())
    lists: dict[tuple[int, int], list[tuple[int, str, float]]] = {}
    for t, kind, iid, ex, rank in zip(rows["t"], rows["kind"], rows["item_id"], rows["exact"],
                                      rows["rank"], strict=True):
        lists.setdefault((t, kind), []).append((rank, iid, ex))

    def get(kind: int) -> list[tuple[list[str], np.ndarray]]:
        out = []
        for t in range(n_test):
            r = sorted(lists.get((t, kind), []))
            out.append(([x[1] for x in r], np.array([x[2] for x in r], dtype=np.float64)))
        return out

    return Shortlists(exact=get(EXACT), cand=get(CAND))


def tops_for(lists: Shortlists, cand: list[tuple[list[str], np.ndarray]], anchor_ids: list[str],
             c: np.ndarray, extra_calls: int = 0) -> list[QueryTops]:
    """QueryTops of every test query with the given candidate lists; `anchor_ids` and the rows
    of `c` are the anchor items in the pool, `extra_calls` the detached ones."""
    return [QueryTops(exact_ids=lists.exact[t][0], cand_ids=cand[t][0], cand_exact=cand[t][1],
                      anchor_ids=list(anchor_ids), anchor_exact=c[:, t],
                      extra_calls=extra_calls)
            for t in range(c.shape[1])]


def recall_with_candidates(lists: Shortlists, cand: list[tuple[list[str], np.ndarray]],
                           anchor_ids: list[str], c: np.ndarray,
                           figures: list[Figure], extra_calls: int = 0
                           ) -> dict[str, float]:
    """Top-k-Recall@budget when the search retrieves `cand` (best first) after the anchors."""
    return recall_from_tops(tops_for(lists, cand, anchor_ids, c, extra_calls), figures)
