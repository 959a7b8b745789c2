"""One version's build as the stages see it: the config, the store, the stage states, and the
readers every stage shares (the anchors, the score rows, small arrays of the version).

Stage state: one small JSON document per completed stage under the store's build state folder
(``_builds/<version>/``, outside the version folder, which must hold only what its manifest
lists), each recording the digest of the config it ran with, so a resumed build skips exactly
the stages an earlier attempt completed with the same config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from curindex.config import BuildConfig
from curindex.errors import ConfigError, CurIndexError, StoreError
from curindex.kinds import scorerows
from curindex.manifest import Manifest, read_manifest
from curindex.pipeline import incremental
from curindex.pipeline.anchors import Anchors
from curindex.pipeline.chunks import chunk_name, open_dir, stale_chunks
from curindex.pipeline.corpus import input_digest, read_texts
from curindex.scoring.base import fingerprint_for
from curindex.store import FileEntry, Store, validate_version_id

log = logging.getLogger("curindex.pipeline")


def work_dir(cfg: BuildConfig, store: Store, version: str) -> str:
    """Where Spark writes this build's intermediate scores (a Hadoop URI or local path)."""
    if cfg.store.work_dir:
        return f"{cfg.store.work_dir.rstrip('/')}/{version}"
    if "://" in cfg.store.uri:
        raise ConfigError(
            f"{cfg.source}: [store] work_dir: required when the store is not a local path "
            f"(store uri {cfg.store.uri!r}); give a Hadoop URI Spark can write, e.g. s3a://..."
        )
    return store.default_work_dir(version)


def config_digest(cfg: BuildConfig, *, base: str | None = None,
                  inputs: dict[str, str] | None = None) -> str:
    """sha256 of the config's settings (what the manifest records as ``config``), of the base
    version of an incremental build, and of `inputs` (what the stages read besides the
    config: the scorer's fingerprint, the input sources' digests)."""
    doc = cfg.to_dict() if base is None else {**cfg.to_dict(), "_base": base}
    if inputs:
        doc["_inputs"] = dict(inputs)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class BuildContext:
    """The build of one version: what every stage reads and where it records its state."""

    def __init__(self, spark: SparkSession, cfg: BuildConfig, version: str,
                 base: str | None = None) -> None:
        self.spark, self.cfg, self.version = spark, cfg, validate_version_id(version)
        self.store = Store.open(cfg.store.uri, create=True)
        self.work = work_dir(cfg, self.store, self.version)
        self.k_q = cfg.anchors.n_queries
        # The base is resolved once, here (prepare records it; later stages read it there).
        self.base_arg = self.store.resolve(base) if base else None
        # What a stage's output depends on besides the config: a stage completed, or a score
        # chunk committed, with another scorer (its code or weights changed) or from other
        # input files is not reused (`completed`, `pipeline.score`).
        self.inputs = {"scorer": fingerprint_for(cfg.scorer),
                       "items": input_digest(cfg.items, role="items"),
                       "queries": input_digest(cfg.queries, role="queries")}
        self.config_digest = config_digest(cfg, base=self.base_arg, inputs=self.inputs)

    # -- stage state --
    def save(self, stage: str, state: dict, files: list[FileEntry]) -> None:
        self.store.save_build_state(self.version, stage, {
            **state, "config_digest": self.config_digest, "inputs": self.inputs,
            "files": [dataclasses.asdict(f) for f in files]})

    def load(self, stage: str) -> dict:
        doc = self.store.load_build_state(self.version, stage)
        if doc is None:
            raise CurIndexError(
                f"version {self.version}: stage {stage!r} has not completed; run it first")
        return doc

    def completed(self, stage: str) -> bool:
        """Whether an earlier attempt completed `stage` of this version with this config, this
        scorer and these inputs, and its files are still there (a pruned version's stale state
        does not count)."""
        doc = self.store.load_build_state(self.version, stage)
        if doc is None:
            return False
        if doc.get("config_digest") != self.config_digest:
            changed = [k for k, v in self.inputs.items() if doc.get("inputs", {}).get(k) != v]
            log.info("version %s: stage %s: an earlier attempt ran with %s; running it again",
                     self.version, stage, "another " + " and ".join(changed) if changed
                     and doc.get("inputs") else "another config")
            return False
        return all(self.store.has_file(self.version, f["path"], f["size"])
                   for f in doc.get("files", []))

    def clear_states(self) -> None:
        self.store.clear_build_state(self.version)

    def committed_manifest(self) -> Manifest | None:
        """The manifest when this version is already committed with this same config; None
        when it is not committed; StoreError when it was committed from another config."""
        try:
            manifest = read_manifest(self.store, self.version)
        except StoreError:
            return None
        if manifest.config != self.cfg:
            raise StoreError(f"version {self.version} is already committed in {self.store.uri} "
                             "from a different config; versions are immutable, use a new id")
        return manifest

    # -- what the stages share --
    def base(self) -> str | None:
        """The base version of an incremental build (None for a full build)."""
        return self.load("prepare").get("base")

    def exact_truth(self) -> bool:
        """Whether the test queries are scored against every item (validation's truth is
        exact), rather than a pool of candidates (``[validate] ground_truth``)."""
        return (self.load("prepare").get("ground_truth") or {}).get("kind", "exact") == "exact"

    def n_tune(self) -> int:
        """Test queries (the first ones) that choose the served search and tune the
        inversion, never reported: the synthetic tuning queries where the build made them
        (``[validate] synthetic_tuning``), then ``tune_fraction`` of the log's test queries
        (none with fewer than two)."""
        anchors = self.anchors()
        made = anchors.made_tests
        n = len(anchors.test_ids) - made
        return made + (int(n * self.cfg.factorize.tune_fraction) if n >= 2 else 0)

    def stale_chunks(self, folder: str = "scores") -> dict[int, list[str]]:
        """Committed chunks (of the work folder's `folder`: "scores", or the sparse build's
        "pairs") not scored with this build's scorer and inputs (chunk -> what differs)."""
        fs, root = open_dir(f"{self.work}/{folder}")
        return stale_chunks(fs, root, self.inputs)

    def drop_chunks(self, chunks: dict[int, list[str]], folder: str = "scores") -> None:
        fs, root = open_dir(f"{self.work}/{folder}")
        for chunk in chunks:
            fs.delete_file(f"{root}/{chunk_name(chunk)}")

    def check_chunks(self, folder: str = "scores") -> None:
        """Raise unless every committed chunk was scored with this build's scorer and inputs
        (checked before the scores are used: a chunk of another scorer would make a version
        whose searches fail)."""
        stale = self.stale_chunks(folder)
        if stale:
            chunk, what = next(iter(sorted(stale.items())))
            raise CurIndexError(
                f"version {self.version}: {len(stale)} score chunks in {self.work}/{folder} "
                f"were scored with another {' and '.join(what)} (chunk {chunk_name(chunk)}); "
                "run the score stage again")

    def scores(self) -> DataFrame:
        """The committed score chunks: Spark skips `_meta.json` and `_temporary/` (names that
        start with `_`), where unfinished chunks are written. An incremental build adds the
        base's rows of the unchanged items."""
        chunks = self.spark.read.schema(scorerows.SPARK_SCHEMA).parquet(f"{self.work}/scores")
        base = self.base()
        if base is None:
            return chunks
        items = read_texts(self.spark, self.cfg.items, role="items")
        return chunks.unionByName(incremental.reused_rows(items, self.base_rows(base)))

    def base_rows(self, base: str, *, keys_only: bool = False) -> DataFrame:
        files = incremental.base_score_files(self.store, base, read_manifest(self.store, base))
        return incremental.base_rows(self.spark, self.store.uri, files, keys_only=keys_only)

    def anchors(self) -> Anchors:
        items = self.table("anchors/items.parquet")
        qs = self.table("anchors/queries.parquet")
        role = qs.column("role").to_pylist()
        qid, qtext = qs.column("id").to_pylist(), qs.column("text").to_pylist()
        return Anchors(
            query_ids=[i for i, r in zip(qid, role, strict=True) if r == "anchor"],
            query_texts=[t for t, r in zip(qtext, role, strict=True) if r == "anchor"],
            test_ids=[i for i, r in zip(qid, role, strict=True) if r == "test"],
            test_texts=[t for t, r in zip(qtext, role, strict=True) if r == "test"],
            item_ids=items.column("id").to_pylist(),
            item_texts=items.column("text").to_pylist(),
        )

    def table(self, rel: str, *, version: str | None = None) -> pa.Table:
        """A Parquet file of this version (or of `version`)."""
        return pq.read_table(io.BytesIO(self.store.read_bytes(version or self.version, rel)))

    def npy(self, rel: str) -> np.ndarray:
        return np.load(io.BytesIO(self.store.read_bytes(self.version, rel)), allow_pickle=False)

    def read_shard_file(self, rel: str) -> bytes:
        """A shard file of this (uncommitted) version, or of the version it references."""
        holder = self.load("write_shards")["references"].get(rel, self.version)
        return self.store.read_bytes(holder, rel)
