"""The sparse build's exact-model pairs: which (training query, item) pairs are scored, and
scoring them in Spark, committed in chunks so a killed driver resumes.

Which pairs: each training query's bi-encoder top ``k_d`` items over the whole corpus (each
partition keeps its best ``k_d`` per query, a window keeps the global best; ties by item id)
plus ``r`` items drawn uniformly at random (a seeded sample of ``r |Q|`` item ids, dealt out
to the queries in a seeded order). The pairs number at most ``|Q| (k_d + r)`` whatever the
corpus size, and only they reach the driver.

Scoring: the pairs are joined with the items' texts (the corpus read once), cut into chunks by
a stable hash of the item, sorted by item within a chunk (an item's pairs lie together, so a
scorer that encodes items apart from queries encodes it once), and scored in blocks of
``block_items`` pairs by ``curindex.scoring.base.score_pairs`` (the scorer built once per Python
worker). Chunk files ``<out>/chunk-NNNNN.parquet`` (``query int, item_id string, score
float``) are written whole or not at all (``pipeline.chunks``); a later attempt with the same
record keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from curindex.config import ScorerConfig
from curindex.kinds import scorerows
from curindex.pipeline.chunks import ChunkWriter, chunk_blocks, open_dir, rows_in, start_output
from curindex.pipeline.errors import worker_errors
from curindex.pipeline.progress import ProgressLogger

log = logging.getLogger("curindex.pipeline")

ENTRY_SCHEMA = pa.schema([("query", pa.int32()), ("item_id", pa.string()),
                          ("score", pa.float32())])
ENTRY_DDL = "query int, item_id string, score float"
_SALT = "curindex:pairs"


def neighbour_pairs(rows: DataFrame, q_emb: np.ndarray, k: int) -> DataFrame:
    """(query, item_id, sim) of each query's k items of highest bi-encoder similarity.

    rows: the score rows (item_id, bi); q_emb: [n_q, d] unit query embeddings (broadcast)."""
    spark = rows.sparkSession
    q_b = spark.sparkContext.broadcast(np.ascontiguousarray(q_emb, dtype=np.float32))
    found = rows.select("item_id", "bi").mapInArrow(_top_fn(q_b, k),
                                                   "query int, item_id string, sim float")
    w = Window.partitionBy("query").orderBy(F.col("sim").desc(), F.col("item_id"))
    return found.withColumn("_rank", F.row_number().over(w)).where(F.col("_rank") <= k) \
        .drop("_rank")


def _top_fn(q_b: Broadcast, k: int):
    """mapInArrow function: the partition's best k items per query."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        q = q_b.value  # [n_q, d]
        seen: list[str] = []  # the partition's item ids; candidates are rows of it
        best_sim = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_row = np.zeros((len(q), 0), dtype=np.int64)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            sims = q @ scorerows.matrix(batch.column("bi")).T  # [n_q, n]
            rows = np.broadcast_to(np.arange(len(seen), len(seen) + batch.num_rows), sims.shape)
            seen += batch.column("item_id").to_pylist()
            sim, row = np.hstack([best_sim, sims]), np.hstack([best_row, rows])
            if sim.shape[1] > k:
                keep = np.argpartition(-sim, k - 1, axis=1)[:, :k]
                sim, row = np.take_along_axis(sim, keep, 1), np.take_along_axis(row, keep, 1)
            best_sim, best_row = sim, row
        n_q, m = best_sim.shape
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.repeat(np.arange(n_q, dtype=np.int32), m)),
             pa.array([seen[i] for i in best_row.reshape(-1)], pa.string()),
             pa.array(best_sim.reshape(-1), pa.float32())], names=["query", "item_id", "sim"])

    return run


def random_pairs(rows: DataFrame, n_queries: int, r: int, *, seed: int) -> list[tuple[int, str]]:
    """(query, item_id): r items per query, uniformly at random (a seeded sample of r n_q item
    ids, fewer when the corpus is smaller, dealt out in a seeded order)."""
    if r <= 0 or n_queries <= 0:
        return []
    key = F.xxhash64(F.lit(f"{_SALT}:random:{seed}"), F.col("item_id"))
    ids = [x["item_id"] for x in rows.select("item_id", key.alias("_k"))
           .orderBy("_k", "item_id").limit(r * n_queries).collect()]
    if not ids:
        return []
    order = np.random.default_rng(seed).permutation(r * n_queries) % len(ids)
    return [(j // r, ids[int(i)]) for j, i in enumerate(order)]


def choose_pairs(rows: DataFrame, q_emb: np.ndarray, *, neighbours: int, random_items: int,
                 seed: int) -> DataFrame:
    """Every pair to score, (query int, item_id string), distinct."""
    spark = rows.sparkSession
    pairs = neighbour_pairs(rows, q_emb, neighbours).select("query", "item_id") \
        if neighbours else spark.createDataFrame([], "query int, item_id string")
    extra = random_pairs(rows, len(q_emb), random_items, seed=seed)
    if extra:
        pairs = pairs.unionByName(spark.createDataFrame(extra, "query int, item_id string"))
    return pairs.distinct()


def pair_score_fn(scorer_cfg: ScorerConfig, fingerprint: str, queries: Broadcast, *,
                  out_dir: str, block_items: int, stamp: dict[str, str],
                  items_done=None):
    """mapInArrow function: rows (query, item_id, text, chunk) sorted by chunk -> each chunk's
    exact scores committed as one file; yields (chunk, items) per committed chunk."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curindex.pipeline.score import _set_threads
        from curindex.scoring.base import get_scorer

        _set_threads(scorer_cfg.threads)
        scorer = get_scorer(scorer_cfg, fingerprint)
        texts = queries.value
        fs, root = open_dir(out_dir)
        writer: ChunkWriter | None = None
        try:
            for chunk, block in chunk_blocks(batches, block_items):
                if block is None:
                    assert writer is not None
                    n = writer.commit()
                    writer = None
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([chunk], pa.int32()), pa.array([n], pa.int64())],
                        names=["chunk", "items"])
                    continue
                if writer is None:
                    writer = ChunkWriter(fs, root, chunk, stamp=stamp, schema=ENTRY_SCHEMA)
                writer.write(_scored(scorer, texts, block))
                if items_done is not None:
                    items_done.add(block.num_rows)
        finally:
            if writer is not None:
                writer.abort()

    return run


def _scored(scorer, texts: list[str], block: pa.Table) -> pa.RecordBatch:
    """A block of rows (query, item_id, text) as entries (query, item_id, score)."""
    from curindex.scoring.base import score_pairs

    q = block.column("query").to_numpy()
    ids = block.column("item_id").combine_chunks()
    scores = score_pairs(scorer, [texts[int(j)] for j in q], block.column("text").to_pylist(),
                         where=f"pairs of items {ids[0].as_py()!r}..{ids[-1].as_py()!r}")
    return pa.RecordBatch.from_arrays([pa.array(q, pa.int32()), ids.cast(pa.string()),
                                       pa.array(scores, pa.float32())], schema=ENTRY_SCHEMA)


def score_pairs_now(spark: SparkSession, pairs: list[tuple[int, str]], rows: DataFrame, *,
                    queries: list[str], scorer_cfg: ScorerConfig, fingerprint: str,
                    block_items: int) -> pa.Table:
    """Exact scores of `pairs` (query number, item id), scored in Spark (grouped by item, the
    scorer once per Python worker) and collected: entries (query, item_id, score). For the
    small sets validation scores (a pool, a round's candidates); nothing is written."""
    if not pairs:
        return ENTRY_SCHEMA.empty_table()
    sc = spark.sparkContext
    q_b = sc.broadcast(list(queries))
    parts = max(1, min(len(pairs) // max(1, block_items) + 1, 4 * sc.defaultParallelism))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curindex.pipeline.score import _set_threads
        from curindex.scoring.base import get_scorer

        _set_threads(scorer_cfg.threads)
        scorer = get_scorer(scorer_cfg, fingerprint)
        pending = [b for b in batches if b.num_rows]
        table = pa.Table.from_batches(pending) if pending else None
        for start in range(0, table.num_rows if table is not None else 0, block_items):
            yield _scored(scorer, q_b.value, table.slice(start, block_items))

    try:
        with worker_errors():
            return (spark.createDataFrame(pairs, "query int, item_id string")
                    .join(rows.select("item_id", "text"), "item_id")
                    .repartitionByRange(parts, "item_id").sortWithinPartitions("item_id")
                    .mapInArrow(run, ENTRY_DDL).toArrow())
    finally:
        q_b.destroy()


def score_pair_chunks(spark: SparkSession, pairs: DataFrame, rows: DataFrame, *,
                      queries: list[str], scorer_cfg: ScorerConfig, fingerprint: str,
                      partitions: int, block_items: int, out_path: str, n_pairs: int,
                      stamp: dict[str, str], resume: bool = True) -> tuple[int, int]:
    """Score `pairs` (query, item_id) into chunk files under `out_path`; returns (pairs scored
    by this call, pairs kept from an earlier attempt)."""
    n_chunks = max(1, int(partitions))
    fs, root = open_dir(out_path)
    meta = {"format": 1, "kind": "pairs", "n_chunks": n_chunks, "fingerprint": fingerprint,
            "n_queries": len(queries), "n_pairs": n_pairs, "block_items": block_items,
            "stamp": stamp}
    kept = start_output(fs, root, meta, resume=resume)
    resumed = rows_in(fs, kept.values())
    if kept:
        log.info("pairs: resuming: %d of %d chunks (%s pairs) already committed", len(kept),
                 n_chunks, f"{resumed:,}")
    chunk = F.pmod(F.xxhash64(F.lit(_SALT), F.col("item_id")), F.lit(n_chunks)).cast("int")
    todo = pairs.join(rows.select("item_id", "text"), "item_id").withColumn("chunk", chunk)
    if kept:
        todo = todo.where(~F.col("chunk").isin(sorted(kept)))
    sc = spark.sparkContext
    q_b = sc.broadcast(list(queries))
    done = sc.accumulator(0)
    sc.setJobDescription(f"curindex pairs: {n_pairs:,} (training query, item) pairs")
    try:
        with worker_errors(), ProgressLogger("pairs", lambda: done.value,
                                             total=n_pairs - resumed, pairs_per_item=1,
                                             every_s=30.0, unit="pairs"):
            committed = (todo.repartitionByRange(max(1, n_chunks - len(kept)), "chunk")
                         .sortWithinPartitions("chunk", "item_id", "query")
                         .mapInArrow(pair_score_fn(scorer_cfg, fingerprint, q_b,
                                                   out_dir=out_path, block_items=block_items,
                                                   stamp=stamp, items_done=done),
                                     "chunk int, items long")
                         .collect())
    finally:
        q_b.destroy()
        sc.setJobDescription(None)
    return sum(r["items"] for r in committed), resumed


def read_entries(spark: SparkSession, out_path: str) -> pa.Table:
    """Every scored pair, sorted by (query, item_id): what the fit reads (small: at most
    |Q| (k_d + r) rows)."""
    table = spark.read.schema(ENTRY_DDL).parquet(out_path).toArrow()
    return table.sort_by([("query", "ascending"), ("item_id", "ascending")])
