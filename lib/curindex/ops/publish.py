"""Publishing: check a version's quality gate, then swap the store's pointer to it.

The gate is a rule of the pipeline, not of storage, so it lives here and the store never
imports it: :meth:`Store.set_current` verifies and swaps, whatever the version's recall.
"""

from __future__ import annotations

from typing import Any

from curindex.errors import ScorerChangeError, VersionNotFoundError
from curindex.quality.gate import check_publishable
from curindex.store import ANY, Store


def publish_version(store: Store, version: str, *,
                    expect_current: str | Any | None = ANY,
                    allow_scorer_change: bool = False) -> None:
    """Make ``version`` current if it passed its quality gate and verifies, and CURRENT still
    names ``expect_current`` (None: nothing published; by default what it names now).

    The gate is read from the manifest before the files are hashed, so a version under its
    thresholds is refused (:class:`~curindex.errors.QualityGateError`) without reading its
    shards; :meth:`Store.set_current` then verifies every file and swaps. A version built with
    another scorer (fingerprint) than the current version's is refused
    (:class:`~curindex.errors.ScorerChangeError`) unless ``allow_scorer_change``: every reader
    that opens the store would load another model.
    """
    manifest = store.read_manifest(version)
    check_publishable(manifest)
    if not allow_scorer_change:
        check_same_scorer(store, version, manifest)
    store.set_current(version, expect_current=expect_current)


def scorer_of(manifest: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, fingerprint) of the scorer a manifest records, None when it records none."""
    scorer = manifest.get("scorer")
    if not isinstance(scorer, dict) or not scorer.get("fingerprint"):
        return None
    return str(scorer.get("kind", "?")), str(scorer["fingerprint"])


def check_same_scorer(store: Store, version: str, manifest: dict[str, Any]) -> None:
    """ScorerChangeError when the store's current version (another than `version`) was built
    with another scorer than `manifest` records."""
    current = store.current()
    if current is None or current == version:
        return
    new, old = scorer_of(manifest), scorer_of(store.read_manifest(current))
    if new is None or old is None or new[1] == old[1]:
        return
    raise ScorerChangeError(
        f"version {version} was built with scorer {new[0]} ({new[1]}), the current version "
        f"{current} with {old[0]} ({old[1]}): publishing it changes the model every reader "
        "of the store loads, and their scores and recall are not comparable. Publish it with "
        "allow_scorer_change (curindex publish --allow-scorer-change, curindex build --publish "
        "--allow-scorer-change, the DAG's allow_scorer_change param)")


def rollback(store: Store, *, to: str | None = None) -> str:
    """Publish ``to``, by default the version that was current before the current one, against
    the current pointer (a publish in between makes this a lost race); returns the version. A
    rollback may return to another scorer: undoing a scorer change is what it is for."""
    pointer = store.pointer()
    if pointer is None:
        raise VersionNotFoundError(f"store {store.uri}: nothing has been published, there is "
                                   "nothing to roll back")
    target = to if to is not None else pointer["previous"]
    if target is None:
        raise VersionNotFoundError(f"store {store.uri}: CURRENT ({pointer['version']}) has no "
                                   "previous version to roll back to")
    publish_version(store, target, expect_current=pointer["version"], allow_scorer_change=True)
    return target
