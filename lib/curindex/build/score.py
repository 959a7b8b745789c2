"""Score stage: every scored query (anchor + test) against every item, in parallel.

Executors receive the scorer *config* and *fingerprint*; each Python worker builds the scorer
once (``curindex.scoring.get_scorer``) and scores one Arrow batch of items per
``score_block`` call. Output rows: ``item_id, shard, text, truncated, scores`` where ``scores``
is a float32 array over the scored queries (anchor queries first, then test queries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curindex.build.errors import worker_errors
from curindex.config import ScorerConfig

SCORES_SCHEMA = "item_id string, shard int, text string, truncated boolean, scores array<float>"

ArrowMapFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def shard_of(id_col: str, num_shards: int):
    """Shard number of an item: a stable hash of its id, so the layout does not depend on how
    Spark partitioned the data."""
    return F.pmod(F.xxhash64(F.col(id_col)), F.lit(num_shards)).cast("int")


def score_fn(scorer_cfg: ScorerConfig, fingerprint: str, queries: list[str]) -> ArrowMapFn:
    """The mapInArrow function of the score stage (a closure over small, picklable values)."""
    n_q = len(queries)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curindex.scoring import checked_scores, get_scorer, truncated_mask

        _set_threads(scorer_cfg.threads)
        scorer = get_scorer(scorer_cfg, fingerprint)
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
) -> None:
    """Score every item against `queries` and write the scores Parquet to `out_path`.

    Spark's commit protocol makes the output appear whole or not at all.
    """
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(block_items))  # one Arrow batch = one score_block call
    try:
        spark.sparkContext.setJobDescription("curindex: score items")
        with worker_errors():
            (
                items.withColumn("shard", shard_of("id", num_shards))
                .repartition(partitions)
                .mapInArrow(score_fn(scorer_cfg, fingerprint, queries), SCORES_SCHEMA)
                .write.mode("overwrite")
                .parquet(out_path)
            )
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
        spark.sparkContext.setJobDescription(None)
