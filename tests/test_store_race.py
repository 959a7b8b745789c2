"""Publishers racing for CURRENT on a local store: many at once, and one that stalls between
reading CURRENT and writing it. test_store_s3.py runs the tests in __all__ against S3."""

from __future__ import annotations

import itertools
import threading

import pyarrow.fs as pafs

from curindex.errors import ConflictError
from curindex.store import Store
from test_store import make_version, published, reopen

__all__ = [
    "test_a_stalled_publisher_cannot_overwrite_a_newer_pointer",
    "test_racing_publishers_never_lose_an_update",
]

PUBLISHERS = 50
ROUNDS = 3


def candidate(publisher: int, round_: int) -> str:
    # Never the version the same publisher made current the round before, so a win is a swap.
    return f"p{publisher:02d}-{round_ % 2}"


def test_racing_publishers_never_lose_an_update(store: Store) -> None:
    make_version(store, "base")
    store.set_current("base")
    for i in range(PUBLISHERS):
        for r in range(2):
            make_version(store, candidate(i, r))
    barrier = threading.Barrier(PUBLISHERS, timeout=300)
    outcomes: list[tuple[int, int, str | None]] = []  # (round, publisher, error)
    crashed: list[str] = []

    def publisher(i: int) -> None:
        mine = Store.open(store.uri)
        try:
            for r in range(ROUNDS):
                barrier.wait()
                expected = mine.current()
                barrier.wait()  # everyone has read CURRENT before anyone publishes
                try:
                    mine.set_current(candidate(i, r), expect_current=expected)
                    outcomes.append((r, i, None))
                except ConflictError as e:
                    outcomes.append((r, i, str(e)))
        except BaseException as e:
            crashed.append(f"publisher {i}: {e!r}")
            barrier.abort()  # wake the others at once instead of at the barrier's timeout

    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(PUBLISHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert crashed == []
    assert len(outcomes) == PUBLISHERS * ROUNDS
    assert [e for _, _, e in outcomes if e is not None and "lost a race" not in e] == []
    wins = sorted((r, i) for r, i, e in outcomes if e is None)
    # All publishers of a round compare against the same CURRENT: exactly one of them wins.
    assert [r for r, _ in wins] == list(range(ROUNDS))
    history = store.history()
    assert len(history) == 1 + len(wins)  # one new entry per win, none for a loss
    assert [e["version"] for e in history] == ["base"] + [candidate(i, r) for r, i in wins]
    for before, entry in itertools.pairwise(history):
        assert entry["previous"] == before["version"] and entry["seq"] > before["seq"]
    assert store.current() == history[-1]["version"]
    store.verify(store.current())


def test_a_stalled_publisher_cannot_overwrite_a_newer_pointer(store: Store) -> None:
    for v in ("a", "b", "c"):
        make_version(store, v)
    store.set_current("a")
    stalled = reopen(store.uri)
    stalled.pointer_lock_ttl_s = 1.0  # its lock lapses while it stalls
    at_write, resume = threading.Event(), threading.Event()

    def stall(step: str) -> None:
        if step == "history_written":  # it has read CURRENT and is about to replace it
            at_write.set()
            resume.wait(timeout=120)

    stalled.on_publish_step = stall
    outcome: list[str] = []

    def publish_b() -> None:
        try:
            stalled.set_current("b", expect_current="a")
            outcome.append("won")
        except ConflictError as e:
            outcome.append(str(e))

    thread = threading.Thread(target=publish_b)
    thread.start()
    try:
        assert at_write.wait(timeout=120)
        # Another publisher waits out the stalled one's lock, then publishes.
        reopen(store.uri).set_current("c", expect_current="a")
        assert store.current() == "c"
    finally:
        resume.set()
        thread.join(timeout=120)
    assert len(outcome) == 1 and "publish b lost a race: CURRENT changed from a to c" in (
        outcome[0]), outcome
    assert store.current() == "c"
    assert published(store) == ["a", "c"]
    entries = sorted(i.base_name for i in store.fs.get_file_info(
        pafs.FileSelector(f"{store.root}/history")))
    # The stalled publisher's entry (seq 2) was skipped by the other and removed by its writer.
    assert entries == ["000000000001.json", "000000000003.json"]
