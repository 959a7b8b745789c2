"""Validate stage: Top-k-Recall@budget of the built index, distributed.

The test queries were scored against every item in the score pass, so their exact scores are
columns ``k_q ..`` of every item's score row. One pass over the scores computes, per partition
and test query, three shortlists: the exact top ``max(ks)`` items, the top ``max(budgets) - k_i``
non-anchor items by the CUR estimate ``c . (G h)`` (what exact search over the item vectors
returns), and, with the bi-encoder baseline, the top ``max(budgets)`` items by bi-encoder
similarity. Spark keeps the global best of each list with a window; only the shortlists
(``n_test x (max k + 2 max budget)`` rows) reach the driver, never H.

For an approximate index (IVF, HNSW, PQ) the candidates are what the built shards return: the
driver searches the shards one at a time with the test queries' vectors and looks the
candidates' exact scores up in the scores with a join.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from curindex import scorerows
from curindex.evaluate import QueryTops, recall_from_tops
from curindex.figures import Figure

TOPS_SCHEMA = "t int, kind int, item_id string, exact double, score double"
EXACT, CAND, BI = 0, 1, 2  # kinds of shortlist rows
_TOPS_ARROW = pa.schema([("t", pa.int32()), ("kind", pa.int32()), ("item_id", pa.string()),
                         ("exact", pa.float64()), ("score", pa.float64())])


@dataclass(frozen=True)
class Shortlists:
    """Per test query: (item ids, exact scores), best first, for each kind."""

    exact: list[tuple[list[str], np.ndarray]]
    cand: list[tuple[list[str], np.ndarray]]  # by CUR estimate, non-anchor
    bi: list[tuple[list[str], np.ndarray]]  # by bi-encoder similarity (empty without baseline)


def _best(score: np.ndarray, m: int) -> np.ndarray:
    """Row indices of the m best of each column, unordered: [m, n_cols]."""
    n = score.shape[0]
    if m >= n:
        return np.tile(np.arange(n)[:, None], (1, score.shape[1]))
    return np.argpartition(-score, m - 1, axis=0)[:m]


def _tops_fn(g: np.ndarray, c: np.ndarray, k_q: int, anchors: list[str], limits: dict,
             bi_queries: np.ndarray | None, first: int):
    """mapInArrow function: per batch and test query, the best rows of each shortlist.

    g: [k_i, k_q]; c: [k_i, n_test] exact scores of the test queries on the anchor items, the
    queries of score columns ``first .. first + n_test``;
    bi_queries: [n_test, dim] bi-encoder query vectors, or None.
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
            if bi_queries is not None:
                from curindex.baseline import get_biencoder

                items = get_biencoder().encode(batch.column("text").to_pylist())
                ranked[BI] = items.astype(np.float64) @ bi_queries.T.astype(np.float64)
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
    bi_queries: np.ndarray | None = None,
    b_max: int = 0,
    first: int | None = None,
) -> Shortlists:
    """The three shortlists of every test query (see the module docstring). The test queries
    are the score columns ``first ..`` (default k_q: every query after the anchors)."""
    n_test = c.shape[1]
    limits = {EXACT: k_max, CAND: m_max, BI: b_max}
    cols = ["item_id", "scores"] + (["text"] if bi_queries is not None else [])
    shortlist = scores.select(*cols).mapInArrow(
        _tops_fn(g, c, k_q, anchor_ids, limits, bi_queries, k_q if first is None else first),
        TOPS_SCHEMA)
    w = Window.partitionBy("t", "kind").orderBy(F.col("score").desc(), F.col("item_id"))
    limit = (F.when(F.col("kind") == EXACT, k_max).when(F.col("kind") == CAND, m_max)
             .otherwise(b_max))
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

    return Shortlists(exact=get(EXACT), cand=get(CAND), bi=get(BI))


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


def candidate_overlap(got: list[tuple[list[str], np.ndarray]],
                      exact: list[tuple[list[str], np.ndarray]], n: int) -> float:
    """Mean share of exact search's top n candidates that the index also returned."""
    if n <= 0 or not got:
        return float("nan")
    return float(np.mean([len(set(g[0][:n]) & set(e[0][:n])) / max(1, len(e[0][:n]))
                          for g, e in zip(got, exact, strict=True)]))


def baseline_recall(lists: Shortlists, figures: list[Figure]) -> dict[str, float]:
    """Bi-encoder retrieve-and-rerank: the top `budget` by similarity, re-ranked exactly."""
    tops = [QueryTops(exact_ids=lists.exact[t][0], cand_ids=ids, cand_exact=ex,
                      anchor_ids=[], anchor_exact=np.zeros(0))
            for t, (ids, ex) in enumerate(lists.bi)]
    return recall_from_tops(tops, figures)


def index_candidates(
    spark: SparkSession,
    scores: DataFrame,
    *,
    read_shard: Callable[[str], bytes],
    shards: list[dict],
    c: np.ndarray,
    k_q: int,
    anchor_ids: list[str],
    m_max: int,
    nprobe: int,
    ef_search: int,
    first: int | None = None,
) -> list[tuple[list[str], np.ndarray]]:
    """The non-anchor candidates the built (approximate) index returns for each test query,
    with their exact scores. `read_shard(rel)` returns a shard file's bytes; one shard is in
    memory at a time."""
    from curindex.shardindex import read_index, set_search_params, split_labels

    n_test = c.shape[1]
    want = m_max + len(anchor_ids)
    x = np.ascontiguousarray(c.T, dtype=np.float32)  # [n_test, k_i]
    found: list[list[tuple[float, str]]] = [[] for _ in range(n_test)]
    anchor_set = set(anchor_ids)
    with tempfile.TemporaryDirectory(prefix="curindex-validate-") as tmp:
        for s in shards:
            path = os.path.join(tmp, "shard.faiss")
            with open(path, "wb") as f:
                f.write(read_shard(s["index"]))
            index = read_index(path)
            set_search_params(index, nprobe=nprobe, ef_search=ef_search)
            d, lab = index.search(x, min(want, index.ntotal))
            with open(path, "wb") as f:
                f.write(read_shard(s["ids"]))
            item_ids = pq.read_table(path, columns=["item_id"]).column("item_id").to_pylist()
            _, rows = split_labels(lab)
            for t in range(n_test):
                found[t] += [(float(d[t, j]), item_ids[int(rows[t, j])])
                             for j in range(lab.shape[1])
                             if lab[t, j] >= 0 and item_ids[int(rows[t, j])] not in anchor_set]
    cand = [[i for _, i in sorted(f, key=lambda p: (-p[0], p[1]))[:m_max]] for f in found]
    pairs = spark.createDataFrame([(t, i) for t in range(n_test) for i in cand[t]],
                                  "t int, item_id string")
    looked = (pairs.join(scores.select("item_id", "scores"), "item_id")
              .select("t", "item_id",
                      F.element_at("scores", F.col("t") + (k_q if first is None else first) + 1)
                      .cast("double").alias("exact")).toArrow().to_pydict())
    exact = {(t, i): e for t, i, e in zip(looked["t"], looked["item_id"], looked["exact"],
                                          strict=True)}
    return [(cand[t], np.array([exact[(t, i)] for i in cand[t]], dtype=np.float64))
            for t in range(n_test)]
