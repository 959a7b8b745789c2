"""Incremental builds: a new version from a base version and a changed corpus.

The base's anchors and ``G`` are kept, so an item's vector depends on its own scores only. An
item is *unchanged* when the base holds the same id with the same content hash (sha256 of its
text); its kept score row (``[index] keep_scores``) is reused, and only *new* and *changed*
items are scored. Items the corpus no longer holds are dropped. A shard with no new, changed or
deleted item is *untouched*: the new version references the base's files for it instead of
writing them again (``curindex.store``); every other shard is rewritten whole, from the reused
and the new score rows, into the base's trained empty index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curindex.config import BuildConfig
from curindex.errors import ConfigError
from curindex.kinds import scorerows
from curindex.manifest import Manifest

# What an incremental build takes from its base and so must not change.
KEPT_SECTIONS = ("scorer", "anchors", "factorize", "index")


def check_base(cfg: BuildConfig, base: str, manifest: Manifest) -> None:
    """Raise ConfigError when `cfg` cannot extend the base version `base`."""
    have, theirs_all = cfg.to_dict(), manifest.config.to_dict()
    if any(s.h_index or s.bi_index for s in manifest.index.shards):
        raise ConfigError(f"--base {base}: that version keeps its extra indexes in the older "
                          "per-segment layout; build a full version with this curindex first")
    if not manifest.config.index.keep_scores:
        raise ConfigError(f"--base {base}: that version was built without [index] keep_scores "
                          "= true, so its items' scores are not kept; build it again with it")
    for section in KEPT_SECTIONS:
        mine, theirs = have[section], theirs_all[section]
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                raise ConfigError(
                    f"{cfg.source}: [{section}] {key} is {mine.get(key)!r} here and "
                    f"{theirs.get(key)!r} in the base version {base}; an incremental build "
                    f"keeps the base's [{'], ['.join(KEPT_SECTIONS)}] settings"
                )


def detached_anchors(items: DataFrame, anchor_ids: list[str], anchor_texts: list[str]
                     ) -> list[str]:
    """Anchor items the corpus no longer holds with the text they were scored with (deleted or
    changed). G and the queries' vectors still use their stored texts, so they stay anchors;
    but they are no longer items of the corpus, so search leaves them out of its results (a
    changed one is found through the shards like any item)."""
    found = dict(items.where(F.col("id").isin(anchor_ids)).select("id", "text").collect())
    return sorted(i for i, t in zip(anchor_ids, anchor_texts, strict=True) if found.get(i) != t)


def base_score_files(store, base: str, manifest: Manifest) -> list[tuple[int, str, str]]:
    """(shard, holding version, path) of each kept score file of the base."""
    return [(s.shard, store.holder(base, s.scores), s.scores) for s in manifest.index.shards]


def base_rows(spark: SparkSession, store_uri: str, files: list[tuple[int, str, str]], *,
              keys_only: bool = False) -> DataFrame:
    """The base's kept score rows (``scorerows.SPARK_SCHEMA``; ``bi`` null where the base kept
    none), read by the executors, a file per task, streamed in record batches. With
    `keys_only` only (item_id, shard, text, truncated) are read: what telling changes apart
    needs, without the score arrays."""
    names = ["item_id", "text", "truncated"] + ([] if keys_only else ["scores"])
    arrow_schema = (pa.schema([f for f in scorerows.ARROW_SCHEMA if f.name != "scores"])
                    if keys_only else scorerows.arrow_schema(bi=True))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from curindex.store import Store

        store = Store.open(store_uri)
        for batch in batches:
            for shard, holder, rel in zip(*(batch.column(i).to_pylist() for i in range(3)),
                                          strict=True):
                with store.open_input(holder, rel) as f:
                    pf = pq.ParquetFile(f)
                    with_bi = not keys_only and "bi" in pf.schema_arrow.names
                    for part in pf.iter_batches(batch_size=4096,
                                                columns=names + (["bi"] if with_bi else [])):
                        columns = [part.column("item_id"),
                                   pa.array([shard] * part.num_rows, pa.int32()),
                                   *(part.column(c) for c in names[1:])]
                        if not keys_only:
                            columns.append(part.column("bi") if with_bi else
                                           pa.nulls(part.num_rows, scorerows.BI_FIELD.type))
                        yield pa.RecordBatch.from_arrays(columns, schema=arrow_schema)

    table = spark.createDataFrame(files, "shard int, holder string, rel string")
    schema = scorerows.SPARK_SCHEMA
    if keys_only:
        schema = schema.replace(", scores array<float>, bi array<float>", "")
    return table.repartition(max(1, len(files))).mapInArrow(run, schema)


def _keys(df: DataFrame, id_col: str) -> DataFrame:
    return df.select(F.col(id_col).alias("_id"), F.sha2(F.col("text"), 256).alias("_hash"))


def items_to_score(items: DataFrame, base: DataFrame) -> DataFrame:
    """Corpus items (id, text) the base does not hold with the same content: new or changed."""
    keys = _keys(base, "item_id")
    mine = items.withColumn("_hash", F.sha2(F.col("text"), 256))
    return (mine.join(keys, (mine["id"] == keys["_id"]) & (mine["_hash"] == keys["_hash"]),
                      "left_anti").select("id", "text"))


def reused_rows(items: DataFrame, base: DataFrame) -> DataFrame:
    """The base's score rows of the items that are unchanged in the corpus."""
    keys = _keys(items, "id")
    on = (base["item_id"] == keys["_id"]) & (F.sha2(base["text"], 256) == keys["_hash"])
    return base.join(keys, on, "left_semi")


def changes(items: DataFrame, base_keys: DataFrame, shard_col) -> dict:
    """Counts of new, changed, deleted and unchanged items, the unchanged ones' truncated
    count, and the shards that the others touch, in one pass over a full outer join of the
    corpus and the base's keys (``base_rows(..., keys_only=True)``)."""
    mine = items.select("id", F.sha2(F.col("text"), 256).alias("new_hash"))
    theirs = base_keys.select(F.col("item_id").alias("id"), F.col("shard").alias("old_shard"),
                              F.sha2(F.col("text"), 256).alias("old_hash"), "truncated")
    status = (F.when(F.col("old_hash").isNull(), "new")
              .when(F.col("new_hash").isNull(), "deleted")
              .when(F.col("new_hash") != F.col("old_hash"), "changed")
              .otherwise("unchanged"))
    rows = (mine.join(theirs, "id", "full_outer")
            .select(status.alias("status"),
                    F.coalesce(F.col("old_shard"), shard_col).alias("shard"), "truncated")
            .groupBy("status", "shard")
            .agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("truncated").cast("long")).alias("t"))
            .collect())
    out = {k: sum(r["n"] for r in rows if r["status"] == k)
           for k in ("new", "changed", "deleted", "unchanged")}
    out["unchanged_truncated"] = sum(r["t"] or 0 for r in rows if r["status"] == "unchanged")
    out["touched_shards"] = sorted({r["shard"] for r in rows if r["status"] != "unchanged"})
    return out


def shared_shards(store, base: str, manifest: Manifest, touched: list[int]) -> tuple[list[dict],
                                                                                 dict[str, str]]:
    """The base's entries of the untouched shards, and {path: holding version} of their files
    (what the new version references)."""
    entries, refs = [], {}
    for s in manifest.index.shards:
        if s.shard in touched:
            continue
        entries.append({k: v for k, v in dataclasses.asdict(s).items() if v is not None})
        refs.update({rel: store.holder(base, rel) for rel in s.files()})
    return entries, refs
