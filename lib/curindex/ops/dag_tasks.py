"""Spark-free callables of the Airflow rebuild DAG (``dags/curindex_rebuild.py``).

Everything here runs on an Airflow worker at task run time: it reads the build config and talks
to the index store, and never starts Spark. The DAG file imports it only inside its tasks.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("curindex.ops.dag_tasks")


def version_for_run(logical_date: datetime | None, run_id: str) -> str:
    """The version id a DAG run builds: ``rebuild-<logical date, UTC, YYYYMMDDTHHMMSSZ>``, or,
    for a run without a logical date, its run id made safe plus a short digest of it.

    The same run (a retried task, a cleared and re-run task or DAG run) always gets the same
    id, and different runs get different ones.
    """
    if logical_date is not None:
        return "rebuild-" + logical_date.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", run_id)[:80]
    return f"rebuild-{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def spark_conf(config_path: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The ``[spark.conf]`` table of the build config with ``overrides`` over it."""
    from curindex.config import load_config

    conf = dict(load_config(config_path).spark.conf)
    for key, value in (overrides or {}).items():
        conf[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return conf


def check_config(config_path: str, *, scorer: bool = True) -> dict[str, Any]:
    """``curindex check`` of the config (`curindex.ops.check`): what passed and what could not
    be checked here, logged and returned; CheckError (a ConfigError) listing every problem."""
    from curindex.ops.check import check_build

    report = check_build(config_path, scorer=scorer)
    for line in report.checked:
        log.info("ok: %s", line)
    for line in report.notes:
        log.info("note: %s", line)
    report.raise_for_problems()
    return report.to_dict()


def is_committed(config_path: str, version: str) -> bool:
    """Whether ``version`` is committed in the config's store from this same config: its build
    stages are then no-ops. (From another config, the stages fail: versions are immutable.)"""
    return committed_summary(config_path, version) is not None


def committed_summary(config_path: str, version: str) -> dict[str, Any] | None:
    """The build summary of ``version`` when it is committed in the config's store from this
    same config (what the build task returns), else None."""
    from curindex.config import load_config
    from curindex.errors import StoreError
    from curindex.manifest import read_manifest
    from curindex.store import Store

    cfg = load_config(config_path)
    try:
        store = Store.open(cfg.store.uri)
        manifest = read_manifest(store, version)
    except StoreError:
        return None
    if manifest.config != cfg:
        return None
    return {"version": version, "store": store.uri, "items": manifest.counts.items,
            "recall": dict(manifest.validation.recall), "already_committed": True}


def submit_env_vars(env_vars: dict[str, Any] | None, conf: dict[str, str]) -> dict[str, Any]:
    """The environment a build task gives spark-submit: `env_vars` with Spark's logs at WARN
    (``curindex.ops.submit.quiet_spark_env``), unless a log4j2 configuration is named already
    in them, in this worker's environment or in the Spark settings."""
    import os

    from curindex.ops.submit import LOG4J_PROPERTY, quiet_spark_env

    env = {str(k): str(v) for k, v in (env_vars or {}).items()}
    named = (LOG4J_PROPERTY in env.get("SPARK_SUBMIT_OPTS", "") or
             LOG4J_PROPERTY in os.environ.get("SPARK_SUBMIT_OPTS", "") or
             any(LOG4J_PROPERTY in str(v) for v in conf.values()))
    if named:
        return env
    if "SPARK_SUBMIT_OPTS" not in env and os.environ.get("SPARK_SUBMIT_OPTS"):
        env["SPARK_SUBMIT_OPTS"] = os.environ["SPARK_SUBMIT_OPTS"]  # kept, with ours added
    return quiet_spark_env(env)


def failure_hook(context: Any, target: str) -> None:
    """A failed run as one log line (run id, version, the failed task, the reason), then
    `target` (``module:function``, empty: none) called with the Airflow context: the DAG's
    ``on_failure_callback``. An error of the callable is logged, not raised (the run has
    failed already)."""
    import importlib

    dag_run = context.get("dag_run")
    version = (version_for_run(dag_run.logical_date, dag_run.run_id)
               if dag_run is not None else None)
    ti = context.get("ti") or context.get("task_instance")
    log.error("curindex run failed: run %s, version %s, task %s: %s",
              getattr(dag_run, "run_id", None), version, getattr(ti, "task_id", None),
              context.get("reason"))
    if not target:
        return
    module, _, name = target.partition(":")
    try:
        func = getattr(importlib.import_module(module), name)
        func(context)
    except Exception:
        log.exception("CURINDEX_ON_FAILURE=%s failed", target)


def publish_version(config_path: str, version: str, *,
                    allow_scorer_change: bool = False) -> dict[str, Any]:
    """Publish a committed version into the config's store; returns what the asset event
    carries (store, version, recall). A version under its recall thresholds raises
    :class:`curindex.errors.QualityGateError` naming the figures, and one built with another
    scorer than the current version's :class:`curindex.errors.ScorerChangeError` unless
    `allow_scorer_change`; nothing is published then."""
    from curindex.config import load_config
    from curindex.manifest import read_manifest
    from curindex.ops.publish import publish_version as publish
    from curindex.quality.figures import by_figure
    from curindex.store import Store

    store = Store.open(load_config(config_path).store.uri)
    validation = read_manifest(store, version).validation
    recall, floors = dict(validation.recall), validation.min_recall
    for figure, value in by_figure(recall):
        floor = floors.get(str(figure))
        log.info("version %s: %s = %.4f%s", version, figure.label, value,
                 "" if floor is None else f" (threshold {floor:.4f})")
    publish(store, version, allow_scorer_change=allow_scorer_change)
    log.info("version %s is the current version of %s", version, store.uri)
    return {"store": store.uri, "version": version, "recall": recall}


def prune_versions(config_path: str, keep: int) -> list[str]:
    """Delete the config's store's versions beyond the ``keep`` newest (never the current or the
    previous one), with their builds' states and work folders, and abandoned builds' leftovers;
    returns the deleted version ids."""
    from curindex.config import load_config
    from curindex.store import Store

    cfg = load_config(config_path)
    store = Store.open(cfg.store.uri)
    result = store.prune(keep=keep, work_roots=[cfg.store.work_dir])
    log.info("pruned %d version(s), %d build state(s) and %d work folder(s) from %s: %s",
             len(result.versions), len(result.build_states), len(result.work_dirs), store.uri,
             result.versions)
    for what, why in result.skipped:
        log.info("kept %s: %s", what, why)
    return result.versions
