"""Write-shards stage: item vectors ``G h`` per partition, one faiss index per shard.

``G`` is broadcast; each shard's items are sorted by id so a shard's content and labels do not
depend on partitioning (labels and file names: ``curindex.shardindex``). Index types that need
training (IVF, PQ) are trained once on the driver on a sample of item vectors and the empty trained
index is broadcast, so every shard shares one quantizer.
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

from curindex.build.score import ArrowMapFn
from curindex.errors import ConfigError
from curindex.shardindex import empty_index, h_shard_file, shard_files, shard_labels

VECTORS_SCHEMA = "shard int, item_id string, text string, vector array<float>"
# With adaptive search enabled each item also carries its anchor-query scores h (k_q floats).
H_SCHEMA = VECTORS_SCHEMA + ", h array<float>"
WRITTEN_SCHEMA = "shard int, n_items long, files string"
TRAIN_SAMPLE = 100_000  # vectors used to train an IVF/PQ index on the driver


def project_fn(g: np.ndarray, k_q: int, *, keep_h: bool = False) -> ArrowMapFn:
    """mapInArrow function: scores rows -> item vectors (G is captured once per task), and with
    `keep_h` the items' anchor-query scores too."""
    from curindex.cur import item_vectors

    k_i = g.shape[0]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            scores = batch.column("scores")
            width = len(scores.values) // n
            h = scores.values.to_numpy(zero_copy_only=False).reshape(n, width)[:, :k_q]
            e = item_vectors(h, g).reshape(-1)  # [n * k_i]
            columns = [batch.column("shard"), batch.column("item_id"), batch.column("text"),
                       _rows_array(e, k_i)]
            if keep_h:
                columns.append(_rows_array(np.ascontiguousarray(h, np.float32).reshape(-1), k_q))
            yield pa.RecordBatch.from_arrays(
                columns, names=["shard", "item_id", "text", "vector", "h"][: len(columns)]
            )

    return run


def _rows_array(flat: np.ndarray, width: int) -> pa.ListArray:
    """Rows of `width` float32 values as an Arrow list array."""
    offsets = pa.array(np.arange(0, flat.size + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat, type=pa.float32()))


def _column_matrix(table: pa.Table, name: str, width: int) -> np.ndarray:
    values = table.column(name).combine_chunks().values.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(table.num_rows, width), dtype=np.float32)


def write_shard_fn(store_uri: str, version: str, trained: bytes, dim: int, k_q: int = 0):
    """applyInArrow function: one shard's vectors -> its faiss index and id map in the store,
    and with `k_q` > 0 its H index (the items' anchor-query scores, exact inner product, same
    labels) for adaptive search."""

    def run(table: pa.Table) -> pa.Table:
        from curindex.store import Store

        table = table.sort_by("item_id")
        shard = int(table.column("shard")[0].as_py())
        n = table.num_rows
        labels = shard_labels(shard, n)
        index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
        index.add_with_ids(_column_matrix(table, "vector", dim), labels)
        index_rel, ids_rel = shard_files(shard)
        store = Store.open(store_uri)
        entries = []
        with tempfile.TemporaryDirectory(prefix="curindex-shard-") as tmp:
            local = os.path.join(tmp, "index.faiss")
            faiss.write_index(index, local)
            entries.append(store.upload_file(version, index_rel, local))
            if k_q:
                h_index = empty_index("IDMap,Flat", k_q)
                h_index.add_with_ids(_column_matrix(table, "h", k_q), labels)
                faiss.write_index(h_index, local)
                entries.append(store.upload_file(version, h_shard_file(shard), local))
            ids = pa.table(
                {"label": labels, "item_id": table.column("item_id"), "text": table.column("text")}
            )
            local_ids = os.path.join(tmp, "ids.parquet")
            pq.write_table(ids, local_ids)
            entries.append(store.upload_file(version, ids_rel, local_ids))
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
        sample = vectors.sample(fraction=fraction, seed=0).limit(TRAIN_SAMPLE).collect()
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
    keep_h: bool = False,
) -> list[dict]:
    """Write every shard; returns per-shard entries sorted by shard:
    {"shard", "n_items", "index", "ids", ["h_index",] "files": [{"path","size","sha256"}, ...]}.
    `keep_h` also writes each shard's H index (adaptive search)."""
    k_i = g.shape[0]
    g_b = spark.sparkContext.broadcast(np.ascontiguousarray(g, dtype=np.float64))
    try:
        vectors = scores.select("item_id", "shard", "text", "scores").mapInArrow(
            _broadcast_project(g_b, k_q, keep_h), H_SCHEMA if keep_h else VECTORS_SCHEMA
        )
        trained = trained_index(spark, vectors, factory, k_i, n_items)
        spark.sparkContext.setJobDescription("curindex: write index shards")
        rows = (
            vectors.groupBy("shard")
            .applyInArrow(write_shard_fn(store_uri, version, trained, k_i, k_q if keep_h else 0),
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
        if keep_h:
            entry["h_index"] = h_shard_file(r["shard"])
        out.append(entry)
    return out


def _broadcast_project(g_b, k_q: int, keep_h: bool) -> ArrowMapFn:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return project_fn(g_b.value, k_q, keep_h=keep_h)(batches)

    return run
