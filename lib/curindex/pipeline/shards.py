"""Write-shards stage: item vectors ``G h`` per partition, one faiss index per shard.

``G`` is broadcast; each shard's items are sorted by id so a shard's content and labels do not
depend on partitioning (labels and file names: ``curindex.search.shardindex``). Index types
that need training (IVF, PQ, and the sq8 encoding of the extra index) are trained once on the
driver on a sample of vectors and the empty trained index is broadcast, so every shard shares
one quantizer; each is kept in the version (``shards/trained.faiss``, ``shards/x-trained.faiss``)
so an incremental build adds to the same quantizers and validation decodes the extra vectors
exactly as the index stores them. The extra index holds, per item, the segments
(``shardindex.EXTRAS``) the version's search methods need, side by side. The id maps are Arrow
IPC files (readers memory-map them). With ``keep_scores`` each shard also keeps its items'
score rows (``shards/scores-NNNNN.parquet``).
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

from curindex.errors import ConfigError
from curindex.kinds import Features, scorerows
from curindex.pipeline.score import ArrowMapFn
from curindex.search.shardindex import (
    EXTRA_TRAINED,
    TRAINED_FILE,
    empty_index,
    extra_factory,
    extra_shard_file,
    scores_shard_file,
    shard_files,
    shard_labels,
)

VECTORS_SCHEMA = "shard int, item_id string, text string, vector array<float>"
KEPT_SCHEMA = ", truncated boolean, scores array<float>"  # with keep_scores
WRITTEN_SCHEMA = "shard int, n_items long, files string"
TRAIN_SAMPLE = 100_000  # vectors used to train an IVF/PQ/SQ index on the driver


def project_fn(features: Features, *, extras: tuple[str, ...] = (),
               keep_scores: bool = False) -> ArrowMapFn:
    """mapInArrow function: score rows -> item vectors (``features``: the build kind's map of
    a row to its features ``h`` and its vector ``e``), plus the extra index's vector ("x": the
    segments of `extras`, "h" the features, "bi" the bi-encoder embedding the score stage
    computed, side by side), plus the score rows themselves (and their embeddings) with
    `keep_scores`."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            scores = batch.column("scores")
            h = features.h(scorerows.matrix(scores), lambda b=batch: _embeddings(b))
            columns = {"shard": batch.column("shard"), "item_id": batch.column("item_id"),
                       "text": batch.column("text"),
                       "vector": scorerows.list_array(features.e(h))}
            if extras:
                parts = {"h": h, "bi": _embeddings(batch) if "bi" in extras else None}
                columns["x"] = scorerows.list_array(np.hstack([parts[n] for n in extras]))
            if keep_scores:
                columns["truncated"], columns["scores"] = batch.column("truncated"), scores
                if "bi" in extras:
                    columns["bi"] = batch.column("bi")
            yield pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))

    return run


def _embeddings(batch: pa.RecordBatch) -> np.ndarray:
    bi = batch.column("bi")
    if bi.null_count:
        first = batch.column("item_id")[bi.is_null().index(True).as_py()].as_py()
        raise ConfigError(f"item {first!r} has no bi-encoder embedding in its score row: the "
                          "scores were computed without the bi-encoder methods")
    return scorerows.matrix(bi)


def write_shard_fn(store_uri: str, version: str, trained: dict[str, bytes],
                   extras: tuple[str, ...] = (), keep_scores: bool = False):
    """applyInArrow function: one shard's vectors -> its faiss index and Arrow id map in the
    store, its extra index (same labels, `trained["x"]`'s encoding) when `extras`, and its
    score rows with `keep_scores`."""

    def run(table: pa.Table) -> pa.Table:
        from curindex.store import Store

        table = table.sort_by("item_id")
        shard = int(table.column("shard")[0].as_py())
        n = table.num_rows
        labels = shard_labels(shard, n)
        index_rel, ids_rel = shard_files(shard)
        store = Store.open(store_uri)
        entries = []
        with tempfile.TemporaryDirectory(prefix="curindex-shard-") as tmp:
            local = os.path.join(tmp, "index.faiss")
            for name, rel in [("vector", index_rel),
                              *([("x", extra_shard_file(shard))] if extras else [])]:
                index = faiss.deserialize_index(np.frombuffer(trained[name], dtype=np.uint8))
                index.add_with_ids(scorerows.matrix(table.column(name)), labels)
                faiss.write_index(index, local)
                entries.append(store.upload_file(version, rel, local))
            ids = pa.table({"label": labels, "item_id": table.column("item_id"),
                            "text": table.column("text")})
            local_ids = os.path.join(tmp, "ids.arrow")
            with pa.OSFile(local_ids, "wb") as sink, pa.ipc.new_file(sink, ids.schema) as w:
                w.write_table(ids)
            entries.append(store.upload_file(version, ids_rel, local_ids))
            if keep_scores:
                local_scores = os.path.join(tmp, "scores.parquet")
                kept = ["item_id", "text", "truncated", "scores"] + (
                    ["bi"] if "bi" in extras else [])
                pq.write_table(table.select(kept), local_scores)
                entries.append(store.upload_file(version, scores_shard_file(shard),
                                                 local_scores))
        files = [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in entries]
        return pa.table(
            {"shard": [shard], "n_items": [n], "files": [json.dumps(files)]},
            schema=pa.schema([("shard", pa.int32()), ("n_items", pa.int64()),
                              ("files", pa.string())]),
        )

    return run


def trained_indexes(spark: SparkSession, vectors: DataFrame, *, factory: str, encoding: str,
                    dims: dict[str, int], n_items: int) -> dict[str, bytes]:
    """The empty index of each column ("vector": `factory`; "x", the extra index: `encoding`),
    trained on a sample of the column's vectors when its type needs training."""
    indexes = {name: empty_index(factory if name == "vector" else extra_factory(encoding), d)
               for name, d in dims.items()}
    untrained = [name for name, index in indexes.items() if not index.is_trained]
    if untrained:
        spark.sparkContext.setJobDescription("curindex: sample vectors to train the indexes")
        fraction = min(1.0, 1.2 * TRAIN_SAMPLE / max(1, n_items))
        sample = (vectors.select(*untrained).sample(fraction=fraction, seed=0)
                  .limit(TRAIN_SAMPLE).collect())
        for name in untrained:
            x = np.array([r[name] for r in sample], dtype=np.float32)
            what = f"[index] factory {factory!r}" if name == "vector" else \
                f"[index] encoding {encoding!r} (the extra index)"
            try:
                indexes[name].train(x)
            except RuntimeError as e:
                raise ConfigError(f"{what}: training on {len(x)} vectors failed: {e}") from e
    return {name: faiss.serialize_index(index).tobytes() for name, index in indexes.items()}


def trained_files(name: str) -> str:
    """Where the version keeps column `name`'s trained empty index."""
    return TRAINED_FILE if name == "vector" else EXTRA_TRAINED


def write_shards(
    spark: SparkSession,
    scores: DataFrame,
    *,
    features: Features,
    factory: str,
    encoding: str,
    n_items: int,
    store_uri: str,
    version: str,
    extras: tuple[str, ...] = (),
    keep_scores: bool = False,
    shards: list[int] | None = None,
    trained: dict[str, bytes] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Write every shard (or only `shards`); returns per-shard entries sorted by shard:
    {"shard", "n_items", "index", "ids", "<extra>_index"..., "scores"?, "files": [{"path",
    "size", "sha256"}, ...]}, with the extra index of the segments `extras`
    (``shardindex.EXTRAS``) and the score rows with `keep_scores`; and the entries of the
    trained empty index files. `trained` (an earlier version's, by column) skips training."""
    from curindex.store import Store

    f_b = spark.sparkContext.broadcast(features)
    if shards is not None:
        scores = scores.where(scores["shard"].isin(shards))
    try:
        vectors = scores.select("item_id", "shard", "text", "truncated", "scores", "bi") \
            .mapInArrow(_broadcast_project(f_b, extras, keep_scores),
                        VECTORS_SCHEMA + (", x array<float>" if extras else "")
                        + (KEPT_SCHEMA if keep_scores else "")
                        + (", bi array<float>" if keep_scores and "bi" in extras else ""))
        if trained is None:
            first = vectors.select("vector", *(["x"] if extras else [])).first()
            dims = {"vector": len(first["vector"])}
            if extras:
                dims["x"] = len(first["x"])
            trained = trained_indexes(spark, vectors, factory=factory, encoding=encoding,
                                      dims=dims, n_items=n_items)
        store = Store.open(store_uri)
        trained_entries = [store.write_bytes(version, trained_files(name), data)
                           for name, data in sorted(trained.items())]
        spark.sparkContext.setJobDescription("curindex: write index shards")
        rows = (
            vectors.groupBy("shard")
            .applyInArrow(write_shard_fn(store_uri, version, trained, extras, keep_scores),
                          WRITTEN_SCHEMA)
            .collect()
        )
    finally:
        spark.sparkContext.setJobDescription(None)
        f_b.destroy()
    out = []
    for r in sorted(rows, key=lambda r: r["shard"]):
        index_rel, ids_rel = shard_files(r["shard"])
        entry = {"shard": r["shard"], "n_items": r["n_items"], "index": index_rel,
                 "ids": ids_rel, "files": json.loads(r["files"])}
        if extras:
            entry["extra_index"] = extra_shard_file(r["shard"])
        if keep_scores:
            entry["scores"] = scores_shard_file(r["shard"])
        out.append(entry)
    return out, [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in trained_entries]


def _broadcast_project(f_b, extras: tuple[str, ...], keep_scores: bool) -> ArrowMapFn:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return project_fn(f_b.value, extras=extras, keep_scores=keep_scores)(batches)

    return run
