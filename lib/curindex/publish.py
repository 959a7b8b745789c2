"""Publishing: check the quality gate, then swap the store's pointer (interim module: the
store package provides the pointer's compare-and-swap)."""

from __future__ import annotations

from curindex.gate import check_publishable
from curindex.store import Store


def publish_version(store: Store, version: str) -> None:
    """Verify, check the gate, then make `version` current (QualityGateError below its
    thresholds, StoreError when it lost a race)."""
    check_publishable(store.read_manifest(version))
    store.publish(version)
