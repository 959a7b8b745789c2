"""CURRENT, the published version, with its history; replaced only by compare-and-swap.

Serving reads ``CURRENT`` and opens the version it names, so publishing and rolling back are one
small pointer write. A publish

1. verifies the version and reads CURRENT; if it does not name ``expect_current``, the publish
   lost a race and stops;
2. takes the pointer lock, which a prune also takes, so that no version is deleted while it is
   being published (waiting while another publish or prune holds it);
3. reads CURRENT again with its tag (S3 ETag, or a hash of the bytes locally);
4. creates its history entry ``history/<seq>.json``, create-only, so every value CURRENT will
   ever hold is recorded first, by exactly one publisher;
5. replaces CURRENT only if it still has the tag read in 3 (``If-Match`` on S3, a ``flock``
   guarded read-compare-rename locally). The replace is exact on its own: a publisher that
   stalled past its lock's expiry fails here, and never overwrites a newer pointer.

Each pointer names the seq of the one it replaced (``previous_seq``), so the history is the
chain followed back from CURRENT: an entry left by a publish that crashed before its swap, or
that lost the swap, is never on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from curindex.errors import (
    ConflictError,
    IntegrityError,
    StoreError,
    VersionNotFoundError,
)
from curindex.store.cas import Cas, PreconditionFailed, Tagged
from curindex.store.io import MAX_SMALL_JSON_BYTES, StoreIO, dumps, loads
from curindex.store.layout import HISTORY_DIR, POINTER, Layout, validate_version_id
from curindex.store.lock import Lock
from curindex.store.versions import Versions, now_iso

# The order in which set_current passes its steps; Store.crash_at names one of them.
PUBLISH_STEPS = ("verified", "locked", "history_written", "swapped", "unlocked")
_MAX_SKIPPED_ENTRIES = 1000  # history entries left by dead publishes, skipped in one publish


class _Entry(NamedTuple):
    """A history entry this publish created."""

    path: str
    tag: str


class SimulatedCrash(Exception):
    """Raised by set_current at the step named by ``Store.crash_at``, to test crash recovery."""


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def check_pointer(doc: Any) -> dict[str, Any]:
    """The pointer document ``doc`` checked, or ValueError/KeyError/TypeError/StoreError."""
    validate_version_id(doc["version"])
    if doc["previous"] is not None:
        validate_version_id(doc["previous"])
    if type(doc["seq"]) is not int or doc["seq"] < 1:
        raise TypeError("seq is not an int >= 1")
    prev_seq = doc.get("previous_seq", doc["seq"] - 1 or None)  # entries before the chain
    if prev_seq is not None and (type(prev_seq) is not int or not 1 <= prev_seq < doc["seq"]):
        raise TypeError("previous_seq is not an int below seq")
    return {**doc, "previous_seq": prev_seq}


class Pointer:
    """CURRENT and history/ of one store."""

    lock_ttl_s: float = 30.0  # a pointer lock older than this belongs to a dead process
    lock_wait_s: float = 90.0  # longer than lock_ttl_s, so a dead holder's lock is outlived

    def __init__(self, io: StoreIO, layout: Layout, cas: Cas, versions: Versions) -> None:
        self.io, self.layout, self.cas, self.versions = io, layout, cas, versions

    def _parse(self, data: Any, where: str) -> dict[str, Any]:
        try:
            return check_pointer(data)
        except (ValueError, KeyError, TypeError, StoreError) as e:
            raise self.io.err(f"{where} is malformed: {e}", IntegrityError) from e

    def read(self) -> dict[str, Any] | None:
        """The CURRENT document, None if nothing was ever published."""
        doc = self.io.read_json(self.layout.pointer(), limit=MAX_SMALL_JSON_BYTES)
        return None if doc is None else self._parse(doc, POINTER)

    def current(self) -> str | None:
        doc = self.read()
        return None if doc is None else doc["version"]

    def history(self) -> list[dict[str, Any]]:
        """Every value CURRENT has held, oldest first: the chain back from CURRENT."""
        doc = self.read()
        chain: list[dict[str, Any]] = []
        seq = None if doc is None else doc["seq"]
        while seq is not None:
            where = f"{HISTORY_DIR}/{seq:012d}.json"
            entry = self.io.read_json(self.layout.history_entry(seq),
                                      limit=MAX_SMALL_JSON_BYTES)
            if entry is None:
                raise self.io.err(f"{where} is missing from the history chain", IntegrityError)
            entry = self._parse(entry, where)
            if entry["seq"] != seq:
                raise self.io.err(f"{where} holds seq {entry['seq']}", IntegrityError)
            chain.append(entry)
            seq = entry["previous_seq"]
        return chain[::-1]

    def lock(self, *, ttl_s: float | None = None) -> Lock:
        """The lock a publish or a prune holds while it works on CURRENT."""
        return Lock(self.cas, self.layout.pointer_lock(), name=f"store {self.io.uri}: pointer "
                    "lock", ttl_s=ttl_s or self.lock_ttl_s, heartbeat=False)

    def _lost_race(self, version: str, expected: object, actual: str | None) -> ConflictError:
        return ConflictError(f"store {self.io.uri}: publish {version} lost a race: CURRENT "
                             f"changed from {expected} to {actual}")

    def set_current(self, version: str, *, expect_current: object,
                    step: Callable[[str], None]) -> None:
        self.versions.vdir(version)
        self.versions.verify(version)
        step("verified")
        seen = self.current()
        expected = seen if expect_current is ANY else expect_current
        if seen != expected:  # fail early, without taking the lock
            raise self._lost_race(version, expected, seen)
        if seen == version:
            return  # already current: nothing to swap

        def give_up() -> None:  # once CURRENT moved, waiting for the lock is pointless
            if (now := self.current()) != expected:
                raise self._lost_race(version, expected, now)

        lock = self.lock().acquire(wait_s=self.lock_wait_s, give_up=give_up)
        try:
            step("locked")
            swapped = self._swap(version, expected, step)
        except SimulatedCrash:
            lock.abandon()  # a crashed process releases nothing; its lock has to expire
            raise
        except BaseException:
            lock.release()
            raise
        lock.release()
        if swapped:
            step("unlocked")

    def _swap(self, version: str, expected: object, step: Callable[[str], None]) -> bool:
        got = self.cas.read(self.layout.pointer())
        old = None if got is None else self._parse(_json(got, POINTER, self.io), POINTER)
        cur = None if old is None else old["version"]
        if cur != expected:
            raise self._lost_race(version, expected, cur)
        if cur == version:
            return False
        # prune() deletes under the same lock; the version must still be there now.
        if not self.versions.is_committed(version):
            raise self.io.err(f"version {version} was deleted while being published",
                              VersionNotFoundError)
        entry, data = self._claim_entry(version, old)
        step("history_written")
        try:
            self.cas.write(self.layout.pointer(), data, expect=None if got is None else got.tag)
        except PreconditionFailed:
            self.cas.delete(entry.path, expect=entry.tag)  # never on the chain: tidy it away
            raise self._lost_race(version, expected, self.current()) from None
        step("swapped")
        return True

    def _claim_entry(self, version: str, old: dict[str, Any] | None) -> tuple[_Entry, bytes]:
        """Create the history entry of the new pointer (create-only) at the first free seq
        after the old pointer's; returns it and the pointer's bytes."""
        base = 0 if old is None else old["seq"]
        for seq in range(base + 1, base + 1 + _MAX_SKIPPED_ENTRIES):
            data = dumps({
                "version": version,
                "previous": None if old is None else old["version"],
                "previous_seq": None if old is None else old["seq"],
                "published_at": now_iso(),
                "seq": seq,
            })
            path = self.layout.history_entry(seq)
            try:
                return _Entry(path, self.cas.write(path, data, expect=None)), data
            except PreconditionFailed:
                continue  # left by a publish that died or lost: not on the chain
        raise self.io.err(f"{HISTORY_DIR}/ has {_MAX_SKIPPED_ENTRIES} entries after seq {base} "
                          "that are not on the chain; remove them (prune does)", IntegrityError)

    def orphans(self) -> list[str]:
        """Paths of history entries below CURRENT's seq that are not on the chain: left by
        publishes that died or lost, and never reachable again."""
        chain = self.history()
        if not chain:
            return []
        on_chain = {e["seq"] for e in chain}
        out = []
        for info in self.io.listdir(self.layout.history_dir()):
            stem = info.base_name.removesuffix(".json")
            if stem.isdigit() and int(stem) < chain[-1]["seq"] and int(stem) not in on_chain:
                out.append(info.path)
        return out



def _json(got: Tagged, where: str, io: StoreIO) -> Any:
    try:
        return loads(got.data)
    except ValueError as e:
        raise io.err(f"{where} is not JSON that curindex reads: {e}",
                     IntegrityError) from e
