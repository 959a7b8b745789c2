"""Score stage: every scored query (anchor + test) against every item, in parallel.

Executors receive the scorer *config* and *fingerprint*; each Python worker builds the scorer
once (``curindex.scoring.get_scorer``) and scores one Arrow batch of items per
``score_block`` call. Scorers that encode queries apart from items (maxsim) get them encoded
once on the driver and broadcast. Output rows: ``item_id, shard, text, truncated, scores``
where ``scores`` is a float32 array over the scored queries (anchor queries first, then test
queries). Progress (items, pairs/s, ETA) is logged while the stage runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
from pyspark import Accumulator, Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curindex.build.errors import worker_errors
from curindex.build.progress import ProgressLogger
from curindex.config import ScorerConfig

SCORES_SCHEMA = "item_id string, shard int, text string, truncated boolean, scores array<float>"

ArrowMapFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def shard_of(id_col: str, num_shards: int):
    """Shard number of an item: a stable hash of its id, so the layout does not depend on how
    Spark partitioned the data."""
    return F.pmod(F.xxhash64(F.col(id_col)), F.lit(num_shards)).cast("int")


def score_fn(
    scorer_cfg: ScorerConfig,
    fingerprint: str,
    queries: list[str],
    *,
    prepared: Broadcast | None = None,
    items_done: Accumulator | None = None,
) -> ArrowMapFn:
    """The mapInArrow function of the score stage (a closure over small, picklable values).

    `prepared`: a broadcast of `prepare_queries(...)` for the scorer's `load_queries`;
    `items_done`: an accumulator that counts the items scored (for progress).
    """
    n_q = len(queries)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curindex.scoring import checked_scores, get_scorer, truncated_mask

        _set_threads(scorer_cfg.threads)
        scorer = get_scorer(scorer_cfg, fingerprint)
        if prepared is not None:
            scorer.load_queries(queries, prepared.value)  # type: ignore[attr-defined]
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column("id")
            texts = batch.column("text").to_pylist()
            where = f"items {ids[0].as_py()!r}..{ids[-1].as_py()!r}"
            block = checked_scores(
                scorer.score_block(queries, texts), n_q, len(texts), where=where
            )  # [n_q, n_items]
            flat = np.ascontiguousarray(block.T).reshape(-1)  # item-major
            offsets = pa.array(np.arange(0, flat.size + 1, n_q, dtype=np.int32))
            yield pa.RecordBatch.from_arrays(
                [
                    ids,
                    batch.column("shard"),
                    batch.column("text"),
                    pa.array(truncated_mask(scorer, texts, role="item")),
                    pa.ListArray.from_arrays(offsets, pa.array(flat, type=pa.float32())),
                ],
                names=["item_id", "shard", "text", "truncated", "scores"],
            )
            if items_done is not None:
                items_done.add(batch.num_rows)

    return run


def _set_threads(threads: int) -> None:
    """torch threads for this task: the configured number, else the cores Spark gave the task
    (so concurrent tasks on one executor never oversubscribe its cores)."""
    import torch

    if threads <= 0:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        threads = int(ctx.cpus()) if ctx is not None else 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def score_items(
    spark: SparkSession,
    items: DataFrame,
    *,
    queries: list[str],
    scorer_cfg: ScorerConfig,
    fingerprint: str,
    num_shards: int,
    partitions: int,
    block_items: int,
    out_path: str,
    n_items: int | None = None,
    progress_every_s: float = 30.0,
) -> None:
    """Score every item against `queries` and write the scores Parquet to `out_path`.

    `n_items` (the row count of `items`, when the caller knows it) lets the progress lines give
    a percentage and an ETA. Spark's commit protocol makes the output appear whole or not at
    all.
    """
    from curindex.scoring.base import prepare_queries

    sc = spark.sparkContext
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(block_items))  # one Arrow batch = one score_block call
    items_done = sc.accumulator(0)
    size = f"{n_items:,} items" if n_items is not None else "all items"
    sc.setJobDescription(
        f"curindex score: {len(queries)} queries x {size} ({scorer_cfg.kind})"
    )
    prepared = None
    try:
        state = prepare_queries(scorer_cfg, fingerprint, queries)
        prepared = sc.broadcast(state) if state is not None else None
        with (
            worker_errors(),
            ProgressLogger(
                "score", lambda: items_done.value, total=n_items,
                pairs_per_item=len(queries), every_s=progress_every_s,
            ),
        ):
            (
                items.withColumn("shard", shard_of("id", num_shards))
                .repartition(partitions)
                .mapInArrow(
                    score_fn(
                        scorer_cfg, fingerprint, queries, prepared=prepared,
                        items_done=items_done,
                    ),
                    SCORES_SCHEMA,
                )
                .write.mode("overwrite")
                .parquet(out_path)
            )
    finally:
        if prepared is not None:
            prepared.destroy()
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
        sc.setJobDescription(None)
