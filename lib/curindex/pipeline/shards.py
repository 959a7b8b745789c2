"""Write-shards stage: item vectors ``G h`` per partition, one faiss index per shard.

``G`` is broadcast; each shard's items are sorted by id so a shard's content and labels do not
depend on partitioning (labels and file names: ``curindex.shardindex``). Index types that need
training (IVF, PQ) are trained once on the driver on a sample of item vectors and the empty trained
index is broadcast, so every shard shares one quantizer; it is kept in the version
(``shards/trained.faiss``) so an incremental build adds to the same quantizer. With
``keep_scores`` each shard also keeps its items' score rows (``shards/scores-NNNNN.parquet``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from curindex import scorerows
from curindex.errors import ConfigError
from curindex.pipeline.score import ArrowMapFn
from curindex.shardindex import (
    TRAINED_FILE,
    empty_index,
    extra_shard_file,
    scores_shard_file,
    shard_files,
    shard_labels,
)

VECTORS_SCHEMA = "shard int, item_id string, text string, vector array<float>"
KEPT_SCHEMA = ", truncated boolean, scores array<float>"  # with keep_scores
WRITTEN_SCHEMA = "shard int, n_items long, files string"
TRAIN_SAMPLE = 100_000  # vectors used to train an IVF/PQ index on the driver


def project_fn(g: np.ndarray, k_q: int, *, extras: tuple[str, ...] = (),
               keep_scores: bool = False) -> ArrowMapFn:
    """mapInArrow function: scores rows -> item vectors (G is captured once per task), plus a
    column per extra index (``curindex.shardindex.EXTRAS``), plus the score rows themselves
    with `keep_scores`."""
    from curindex.cur import item_vectors

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            scores = batch.column("scores")
            h = scorerows.matrix(scores)[:, :k_q]
            columns = {"shard": batch.column("shard"), "item_id": batch.column("item_id"),
                       "text": batch.column("text"),
                       "vector": scorerows.list_array(item_vectors(h, g))}
            if "h" in extras:
                columns["h"] = scorerows.list_array(h)
            if "bi" in extras:
                from curindex.baseline import get_biencoder

                columns["bi"] = scorerows.list_array(get_biencoder().encode(
                    batch.column("text").to_pylist()))
            if keep_scores:
                columns["truncated"], columns["scores"] = batch.column("truncated"), scores
            yield pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))

    return run


def write_shard_fn(store_uri: str, version: str, trained: bytes, extras: tuple[str, ...] = (),
                   keep_scores: bool = False):
    """applyInArrow function: one shard's vectors -> its faiss index and id map in the store,
    an exact inner-product index (same labels) per extra column, and its score rows with
    `keep_scores`."""

    def run(table: pa.Table) -> pa.Table:
        from curindex.store import Store

        table = table.sort_by("item_id")
        shard = int(table.column("shard")[0].as_py())
        n = table.num_rows
        labels = shard_labels(shard, n)
        index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
        index.add_with_ids(scorerows.matrix(table.column("vector")), labels)
        index_rel, ids_rel = shard_files(shard)
        store = Store.open(store_uri)
        entries = []
        with tempfile.TemporaryDirectory(prefix="curindex-shard-") as tmp:
            local = os.path.join(tmp, "index.faiss")
            faiss.write_index(index, local)
            entries.append(store.upload_file(version, index_rel, local))
            for name in extras:
                x = scorerows.matrix(table.column(name))
                extra = empty_index("IDMap,Flat", x.shape[1])
                extra.add_with_ids(x, labels)
                faiss.write_index(extra, local)
                entries.append(store.upload_file(version, extra_shard_file(name, shard), local))
            ids = pa.table(
                {"label": labels, "item_id": table.column("item_id"), "text": table.column("text")}
            )
            local_ids = os.path.join(tmp, "ids.parquet")
            pq.write_table(ids, local_ids)
            entries.append(store.upload_file(version, ids_rel, local_ids))
            if keep_scores:
                pq.write_table(table.select(["item_id", "text", "truncated", "scores"]),
                               local_ids)
                entries.append(store.upload_file(version, scores_shard_file(shard), local_ids))
        files = [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in entries]
        return pa.table(
            {"shard": [shard], "n_items": [n], "files": [json.dumps(files)]},
            schema=pa.schema([("shard", pa.int32()), ("n_items", pa.int64()),
                              ("files", pa.string())]),
        )

    return run


def trained_index(spark: SparkSession, vectors: DataFrame, factory: str, dim: int,
                  n_items: int) -> bytes:
    """The empty index, trained on a sample of item vectors when its type needs training."""
    index = empty_index(factory, dim)
    if not index.is_trained:
        spark.sparkContext.setJobDescription("curindex: sample vectors to train the index")
        fraction = min(1.0, 1.2 * TRAIN_SAMPLE / max(1, n_items))
        sample = (vectors.select("vector").sample(fraction=fraction, seed=0)
                  .limit(TRAIN_SAMPLE).collect())
        x = np.array([r["vector"] for r in sample], dtype=np.float32)
        try:
            index.train(x)
        except RuntimeError as e:
            raise ConfigError(
                f"[index] factory {factory!r}: training on {len(x)} vectors failed: {e}"
            ) from e
    return faiss.serialize_index(index).tobytes()


def write_shards(
    spark: SparkSession,
    scores: DataFrame,
    *,
    g: np.ndarray,
    k_q: int,
    factory: str,
    n_items: int,
    store_uri: str,
    version: str,
    extras: tuple[str, ...] = (),
    keep_scores: bool = False,
    shards: list[int] | None = None,
    trained: bytes | None = None,
) -> tuple[list[dict], dict]:
    """Write every shard (or only `shards`); returns per-shard entries sorted by shard:
    {"shard", "n_items", "index", "ids", "<extra>_index"..., "scores"?, "files": [{"path",
    "size", "sha256"}, ...]}, with an extra exact index per name in `extras`
    (``shardindex.EXTRAS``) and the score rows with `keep_scores`; and the entry of the
    trained empty index file. `trained` (an earlier version's) skips training."""
    k_i = g.shape[0]
    g_b = spark.sparkContext.broadcast(np.ascontiguousarray(g, dtype=np.float64))
    if shards is not None:
        scores = scores.where(scores["shard"].isin(shards))
    try:
        vectors = scores.select("item_id", "shard", "text", "truncated", "scores").mapInArrow(
            _broadcast_project(g_b, k_q, extras, keep_scores),
            VECTORS_SCHEMA + "".join(f", {name} array<float>" for name in extras)
            + (KEPT_SCHEMA if keep_scores else ""),
        )
        if trained is None:
            trained = trained_index(spark, vectors, factory, k_i, n_items)
        from curindex.store import Store

        trained_entry = Store.open(store_uri).write_bytes(version, TRAINED_FILE, trained)
        spark.sparkContext.setJobDescription("curindex: write index shards")
        rows = (
            vectors.groupBy("shard")
            .applyInArrow(write_shard_fn(store_uri, version, trained, extras, keep_scores),
                          WRITTEN_SCHEMA)
            .collect()
        )
    finally:
        spark.sparkContext.setJobDescription(None)
        g_b.destroy()
    out = []
    for r in sorted(rows, key=lambda r: r["shard"]):
        index_rel, ids_rel = shard_files(r["shard"])
        entry = {"shard": r["shard"], "n_items": r["n_items"], "index": index_rel,
                 "ids": ids_rel, "files": json.loads(r["files"])}
        for name in extras:
            entry[f"{name}_index"] = extra_shard_file(name, r["shard"])
        if keep_scores:
            entry["scores"] = scores_shard_file(r["shard"])
        out.append(entry)
    return out, {"path": trained_entry.path, "size": trained_entry.size,
                 "sha256": trained_entry.sha256}


def _broadcast_project(g_b, k_q: int, extras: tuple[str, ...], keep_scores: bool) -> ArrowMapFn:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return project_fn(g_b.value, k_q, extras=extras, keep_scores=keep_scores)(batches)

    return run
