"""The index build as stages with durable outputs:

    prepare -> score -> factorize -> write_shards -> validate -> commit [-> publish]

``run_build`` runs them in one Spark application; ``run_stage`` runs one (the Airflow DAG runs
each as its own spark-submit). A stage reads what earlier stages left, in the version's folder
of the store (stage states, anchors, ``G.npy``, shards) or in the work folder (the scores' chunk
files), and overwrites only its own outputs, so a retried stage is idempotent. The version
becomes visible only when ``commit`` writes its manifest (last); serving readers see it only
once it is published, and publishing refuses a version under its recall thresholds. Library
code receives a SparkSession and never creates one.

Resume: each stage state records the digest of the config it ran with. ``run_build`` skips the
stages an earlier attempt at the same version completed with the same config (up to the first
that did not), and the score stage keeps the chunks an unfinished attempt committed, so a
build whose driver died re-runs with the same ``--version`` from where it stopped.
``run_stage`` always recomputes the stage it is asked for.

Incremental: with ``base`` (a committed version built with ``[index] keep_scores``), prepare
takes the base's anchors and ``G``, score scores only the new and changed items, factorize is
the base's, and write_shards rewrites only the shards the changes touch; the others are
referenced from the base (``curindex.pipeline.incremental``).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow.fs as pafs
from pyspark.sql import SparkSession

from curindex.config import BuildConfig
from curindex.errors import ConfigError
from curindex.manifest import Manifest
from curindex.ops.publish import publish_version
from curindex.pipeline.chunks import open_dir
from curindex.pipeline.context import BuildContext
from curindex.pipeline.files import remove_work
from curindex.pipeline.stages import STAGES
from curindex.store import Lock, validate_version_id

log = logging.getLogger("curindex.pipeline")


@dataclass(frozen=True)
class BuildResult:
    version: str
    store_uri: str
    manifest: Manifest | None  # None only when a build ran no stage at all
    published: bool


def new_version_id() -> str:
    """A sortable, unique version id: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_stage(spark: SparkSession, cfg: BuildConfig, *, version: str, stage: str,
              base: str | None = None) -> dict | Manifest:
    """Run one stage of the build of `version`; returns its state (the manifest for commit).
    `base` (prepare only) makes it an incremental build on that committed version."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    ctx = BuildContext(spark, cfg, version, base=base)
    with ctx.store.build_lock(ctx.version) as lock:
        return _run(ctx, stage, lock)


def _run(ctx: BuildContext, stage: str, lock: Lock) -> dict | Manifest:
    committed = ctx.committed_manifest()
    if committed is not None:  # a re-run of a finished build: nothing to do, nothing to undo
        log.info("version %s is already committed: stage %s skipped", ctx.version, stage)
        _remove_leftovers(ctx)
        return committed if stage == "commit" else {"skipped": "version already committed"}
    lock.check()  # a build whose lock was taken over (it stalled past its expiry) stops here
    ctx.store.record_build(ctx.version, ctx.work)
    t0 = time.perf_counter()
    log.info("version %s: stage %s: start", ctx.version, stage)
    if stage == "commit":
        result = STAGES[stage](ctx)
    else:
        result, files = STAGES[stage](ctx)
        ctx.save(stage, {**result, "seconds": round(time.perf_counter() - t0, 3)}, files)
    log.info("version %s: stage %s: done in %.1f s", ctx.version, stage,
             time.perf_counter() - t0)
    return result


def _remove_leftovers(ctx: BuildContext) -> None:
    """What the commit stage of an earlier attempt did not remove because it died after
    writing the manifest: the work folder (every item's score rows) and the stage states."""
    fs, path = open_dir(ctx.work)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        log.info("version %s: removing the work folder its committed build left: %s",
                 ctx.version, ctx.work)
        remove_work(ctx.spark, ctx.work)
    ctx.store.forget_build(ctx.version)


def run_build(spark: SparkSession, cfg: BuildConfig, *, version: str | None = None,
              publish: bool = False, base: str | None = None,
              allow_scorer_change: bool = False) -> BuildResult:
    """Build every stage of one version, then publish it when asked and it passed its gate
    (and, unless `allow_scorer_change`, was built with the current version's scorer). With
    `base` (a version id or "current") the build is incremental on that version."""
    version = validate_version_id(version or new_version_id())
    log.info("building version %s into %s%s", version, cfg.store.uri,
             f" (incremental on {base})" if base else "")
    ctx = BuildContext(spark, cfg, version, base=base)
    # One build of a version at a time: a second fails at once, naming this one.
    with ctx.store.build_lock(ctx.version) as lock:
        manifest = ctx.committed_manifest()
        resuming = manifest is None
        for stage in STAGES:
            # A re-run after a failure (driver lost, ...) skips what an earlier attempt
            # completed with this config, up to the first stage it did not: later ones
            # depend on it.
            resuming = resuming and ctx.completed(stage)
            if resuming:
                log.info("version %s: stage %s: completed by an earlier attempt with this "
                         "config: skipped", version, stage)
                continue
            result = _run(ctx, stage, lock)
            if isinstance(result, Manifest):
                manifest = result
    if publish:
        publish_version(ctx.store, version, allow_scorer_change=allow_scorer_change)
        log.info("published version %s", version)
    return BuildResult(version=version, store_uri=ctx.store.uri, manifest=manifest,
                       published=publish)
