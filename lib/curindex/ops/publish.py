"""Publishing: check a version's quality gate, then swap the store's pointer to it.

The gate is a rule of the pipeline, not of storage, so it lives here and the store never
imports it: :meth:`Store.set_current` verifies and swaps, whatever the version's recall.
"""

from __future__ import annotations

from typing import Any

from curindex.errors import StoreError, VersionNotFoundError
from curindex.quality.gate import check_publishable
from curindex.store import ANY, Store


def publish_version(store: Store, version: str, *,
                    expect_current: str | Any | None = ANY) -> None:
    """Make ``version`` current if it passed its quality gate and verifies, and CURRENT still
    names ``expect_current`` (None: nothing published; by default what it names now).

    The gate is read from the manifest before the files are hashed, so a version under its
    thresholds is refused (:class:`~curindex.errors.QualityGateError`) without reading its
    shards; :meth:`Store.set_current` then verifies every file and swaps.
    """
    check_publishable(store.read_manifest(version))
    store.set_current(version, expect_current=expect_current)


def rollback(store: Store, *, to: str | None = None) -> str:
    """Publish ``to``, by default the version that was current before the current one, against
    the current pointer (a publish in between makes this a lost race); returns the version."""
    pointer = store.pointer()
    if pointer is None:
        raise VersionNotFoundError(f"store {store.uri}: nothing has been published, there is "
                                   "nothing to roll back")
    target = to if to is not None else pointer["previous"]
    if target is None:
        raise StoreError(f"store {store.uri}: CURRENT ({pointer['version']}) has no previous "
                         "version")
    publish_version(store, target, expect_current=pointer["version"])
    return target
