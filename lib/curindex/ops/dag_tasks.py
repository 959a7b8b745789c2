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


def is_committed(config_path: str, version: str) -> bool:
    """Whether ``version`` is committed in the config's store from this same config: its build
    stages are then no-ops. (From another config, the stages fail: versions are immutable.)"""
    from curindex.config import load_config
    from curindex.errors import StoreError
    from curindex.manifest import read_manifest
    from curindex.store import Store

    cfg = load_config(config_path)
    try:
        manifest = read_manifest(Store.open(cfg.store.uri), version)
    except StoreError:
        return False
    return manifest.config == cfg


def publish_version(config_path: str, version: str) -> dict[str, Any]:
    """Publish a committed version into the config's store; returns what the asset event
    carries (store, version, recall). A version under its recall thresholds raises
    :class:`curindex.errors.QualityGateError` naming the figures, and nothing is published."""
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
    publish(store, version)
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
