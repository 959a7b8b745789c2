"""Score stage: every scored query (anchor + test) against every item, in parallel.

Executors receive the scorer *config* and *fingerprint*; each Python worker builds the scorer
once (``curindex.scoring.get_scorer``). Scorers that encode queries apart from items (maxsim) get
them encoded once on the driver and broadcast. Progress (items, pairs/s, ETA) is logged while
the stage runs.

The output is committed in chunks, so a build whose driver dies while scoring keeps what it
finished. Every item has a stable chunk number (a salted 64-bit hash of its id modulo the number
of chunks, like its shard: it does not depend on how Spark partitioned the data); the items are
range-partitioned by chunk, so each chunk lives wholly in one task, and sorted by chunk and id.
The task scores a chunk's items in blocks of ``block_items`` (counted from the chunk's first
item, so a chunk is cut into the same blocks whatever else its task holds: one ``score_block``
call per block) and writes the rows itself, through ``pyarrow.fs``, to a temporary file under
``<out>/_temporary/``, renamed to ``<out>/chunk-NNNNN.parquet`` when the chunk is complete
(``pipeline.chunks``). A reader sees a whole chunk or none of it; a re-executed task attempt
rewrites the same content. Rows: ``item_id, shard, text, truncated, scores`` where ``scores``
is a float32 array over the scored queries (anchor queries first, then test queries), and
``bi``, the item's bi-encoder embedding, when the version's search methods need it.

``<out>/_meta.json`` (written before scoring) records what the chunks were scored from: the
number of chunks, the scorer fingerprint, a digest of the query texts, the shard count and block
size. A later attempt with the same record scores only the chunks not yet committed; any
difference starts the folder over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from pyspark import Accumulator, Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curindex.config import ScorerConfig
from curindex.kinds import scorerows
from curindex.pipeline.chunks import (
    TMP_DIR,
    ChunkWriter,
    chunk_blocks,
    open_dir,
    rows_in,
    start_output,
)
from curindex.pipeline.errors import worker_errors
from curindex.pipeline.progress import ProgressLogger

log = logging.getLogger("curindex.pipeline")

CHUNK_ROWS_SCHEMA = "chunk int, items long"  # what a task returns: one row per committed chunk
META_FORMAT = 1
_CHUNK_SALT = "curindex:chunk"

ArrowMapFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def shard_of(id_col: str, num_shards: int):
    """Shard number of an item: a stable hash of its id, so the layout does not depend on how
    Spark partitioned the data."""
    return F.pmod(F.xxhash64(F.col(id_col)), F.lit(num_shards)).cast("int")


def chunk_of(id_col: str, n_chunks: int):
    """Score chunk of an item: a stable hash of its id (salted, so chunks and shards are not
    aligned), independent of partitioning; the unit of commit and resume of the score stage."""
    return F.pmod(F.xxhash64(F.lit(_CHUNK_SALT), F.col(id_col)), F.lit(n_chunks)).cast("int")


def score_fn(
    scorer_cfg: ScorerConfig,
    fingerprint: str,
    queries: list[str],
    *,
    out_dir: str,
    block_items: int,
    prepared: Broadcast | None = None,
    items_done: Accumulator | None = None,
    biencoder: bool = False,
    stamp: dict[str, str] | None = None,
) -> ArrowMapFn:
    """The mapInArrow function of the score stage (a closure over small, picklable values).

    Input rows ``id, text, shard, chunk`` sorted by chunk; each chunk is scored and committed
    to `out_dir` as one Parquet file; yields one ``chunk, items`` row per committed chunk.
    `prepared`: a broadcast of `prepare_queries(...)` for the scorer's `load_queries`;
    `items_done`: an accumulator that counts the items scored (for progress); `biencoder`:
    each row also gets the item's bi-encoder embedding (column ``bi``), embedded by the same
    task (the bi-encoder loaded once per Python worker); `stamp`: what the chunks are scored
    with, written into each chunk file's metadata (``chunks.stale_chunks`` checks it).
    """
    n_q = len(queries)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curindex.scoring import base

        _set_threads(scorer_cfg.threads)
        # No query to score against every item (a sparse build with pooled validation): the
        # rows carry texts and embeddings only, and no model is loaded.
        scorer = base.get_scorer(task_scorer_config(scorer_cfg), fingerprint) if n_q else None
        embedder = None
        if biencoder:
            from curindex.scoring.biencoder import get_biencoder

            embedder = get_biencoder()
        if prepared is not None and scorer is not None:
            scorer.load_queries(queries, prepared.value)  # type: ignore[attr-defined]
        fs, root = open_dir(out_dir)
        writer: ChunkWriter | None = None
        try:
            for chunk, block in chunk_blocks(batches, block_items):
                if block is None:  # the chunk is complete
                    assert writer is not None
                    rows = writer.commit()
                    writer = None
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([chunk], pa.int32()), pa.array([rows], pa.int64())],
                        names=["chunk", "items"],
                    )
                    continue
                if writer is None:
                    writer = ChunkWriter(fs, root, chunk, bi=biencoder, stamp=stamp)
                ids = block.column("id").combine_chunks()
                texts = block.column("text").to_pylist()
                where = f"items {ids[0].as_py()!r}..{ids[-1].as_py()!r}"
                if scorer is not None:
                    with base.scorer_errors(scorer_cfg, where=where):
                        raw = scorer.score_block(queries, texts)
                    scores = base.checked_scores(raw, n_q, len(texts), where=where)  # [n_q, n]
                else:
                    scores = np.zeros((0, len(texts)), np.float32)
                columns = [
                    ids.cast(pa.string()),
                    block.column("shard").combine_chunks().cast(pa.int32()),
                    block.column("text").combine_chunks().cast(pa.string()),
                    pa.array(base.truncated_mask(scorer, texts, role="item")
                             if scorer is not None else np.zeros(len(texts), bool)),
                    scorerows.list_array(scores.T),  # one row per item
                ]
                if embedder is not None:
                    columns.append(scorerows.list_array(embedder.encode(texts)))
                writer.write(pa.RecordBatch.from_arrays(
                    columns, schema=scorerows.arrow_schema(bi=biencoder)))
                if items_done is not None:
                    items_done.add(block.num_rows)
        finally:
            if writer is not None:
                writer.abort()

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


def task_scorer_config(cfg: ScorerConfig) -> ScorerConfig:
    """`cfg` with ``device`` resolved for this Spark task: the GPU Spark assigned it (its
    ``TaskContext.resources()["gpu"]``), never every GPU of the executor; the CPU for "auto"
    when torch sees no GPU (`curindex.scoring.device.choose_device`)."""
    import torch
    from pyspark import TaskContext

    from curindex.scoring.device import choose_device

    ctx = TaskContext.get()
    resources = ctx.resources() if ctx is not None else {}
    gpus = resources["gpu"].addresses if "gpu" in resources else None
    device = choose_device(cfg.device, gpus=gpus, cuda_count=torch.cuda.device_count())
    if device.startswith("cuda") and not gpus and torch.cuda.device_count() > 1:
        log.warning("score: Spark assigned this task no GPU; it uses %s. Set "
                    "spark.executor.resource.gpu.amount and spark.task.resource.gpu.amount "
                    "so that tasks spread over the GPUs", device)
    return dataclasses.replace(cfg, device=device)


@dataclass(frozen=True)
class ScoreResult:
    """What one run of the score stage did."""

    n_chunks: int
    chunks_resumed: int  # committed by an earlier attempt and kept
    items_resumed: int
    items_scored: int  # scored (and committed) by this run
    # (seconds since the stage began, items scored) every few seconds: its throughput
    progress: tuple[tuple[float, int], ...] = ()


def queries_digest(queries: list[str]) -> str:
    return hashlib.sha256(json.dumps(queries, ensure_ascii=False).encode()).hexdigest()


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
    resume: bool = True,
    progress_every_s: float = 30.0,
    biencoder: str | None = None,
    stamp: dict[str, str] | None = None,
) -> ScoreResult:
    """Score every item against `queries` into chunk files under `out_path` (``partitions``
    chunks; see the module docstring).

    With `resume`, chunks committed by an earlier call with the same queries, scorer, chunk
    count, shard count and block size are kept and only the other items are scored; without
    it the folder starts over. `n_items` (the row count of `items`, when the caller knows it)
    lets the progress lines give a percentage and an ETA. `biencoder` (the bi-encoder's
    fingerprint): each row also carries the item's bi-encoder embedding. `stamp` (the
    scorer's fingerprint and the inputs' digests) goes into the folder's record and every
    chunk's metadata: chunks scored with another stamp are never kept.
    """
    from curindex.scoring.base import prepare_queries
    from curindex.scoring.device import driver_device

    n_chunks = max(1, int(partitions))
    fs, root = open_dir(out_path)
    meta = {"format": META_FORMAT, "n_chunks": n_chunks, "fingerprint": fingerprint,
            "queries_sha256": queries_digest(queries), "n_queries": len(queries),
            "num_shards": num_shards, "block_items": block_items, "n_items": n_items,
            "biencoder": biencoder, "stamp": stamp}
    kept = start_output(fs, root, meta, resume=resume)
    items_resumed = rows_in(fs, kept.values())
    if kept:
        log.info("score: resuming: %d of %d chunks (%s items) already committed in %s",
                 len(kept), n_chunks, f"{items_resumed:,}", root)
    todo = None if n_items is None else n_items - items_resumed

    sc = spark.sparkContext
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(block_items))  # Arrow batches of about one score_block call
    items_done = sc.accumulator(0)
    size = f"{n_items:,} items" if n_items is not None else "all items"
    sc.setJobDescription(
        f"curindex score: {len(queries)} queries x {size} ({scorer_cfg.kind})"
    )
    prepared = None
    try:
        # on the driver, whose GPUs (if any) are not the executors'
        driver_cfg = dataclasses.replace(scorer_cfg, device=driver_device(scorer_cfg.device))
        state = prepare_queries(driver_cfg, fingerprint, queries) if queries else None
        prepared = sc.broadcast(state) if state is not None else None
        rows = items.select("id", "text").withColumns(
            {"shard": shard_of("id", num_shards), "chunk": chunk_of("id", n_chunks)})
        if kept:
            rows = rows.where(~F.col("chunk").isin(sorted(kept)))
        with (
            worker_errors(),
            ProgressLogger(
                "score", lambda: items_done.value, total=todo,
                pairs_per_item=len(queries), every_s=progress_every_s,
            ) as progress,
        ):
            committed = (
                rows.repartitionByRange(max(1, n_chunks - len(kept)), "chunk")
                .sortWithinPartitions("chunk", "id")
                .mapInArrow(
                    score_fn(
                        scorer_cfg, fingerprint, queries, out_dir=out_path,
                        block_items=block_items, prepared=prepared, items_done=items_done,
                        biencoder=biencoder is not None, stamp=stamp,
                    ),
                    CHUNK_ROWS_SCHEMA,
                )
                .collect()
            )
        if fs.get_file_info(f"{root}/{TMP_DIR}").type != pafs.FileType.NotFound:
            fs.delete_dir(f"{root}/{TMP_DIR}")
    finally:
        if prepared is not None:
            prepared.destroy()
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
        sc.setJobDescription(None)
    return ScoreResult(n_chunks=n_chunks, chunks_resumed=len(kept), items_resumed=items_resumed,
                       items_scored=sum(r["items"] for r in committed),
                       progress=tuple(progress.samples))
