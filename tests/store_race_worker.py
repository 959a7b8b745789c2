"""One of two processes that race to publish a version per round (see test_store.py).

Runs under multiprocessing's spawn start method, so it imports nothing from the test modules.
"""

from __future__ import annotations

import traceback
from typing import Any

from curindex.errors import StoreError
from curindex.store import Store


def candidate(name: str, round_: int) -> str:
    """The version ``name`` publishes in a round: never the one the round before made current,
    so every round is a real swap, and three pairs of versions serve any number of rounds."""
    return f"{name}{round_ % 3}"


def race(uri: str, name: str, rounds: int, barrier: Any, results: Any) -> None:
    """Per round: read CURRENT with the rival, then both publish against what they read."""
    store = Store.open(uri)
    wins, losses = 0, []
    try:
        for i in range(rounds):
            barrier.wait()
            expected = store.current()
            barrier.wait()
            try:
                store.set_current(candidate(name, i), expect_current=expected)
                wins += 1
            except StoreError as e:
                losses.append(str(e))
            barrier.wait()
    except BaseException:
        # Wake the other parties at once instead of leaving them to the barrier timeout.
        barrier.abort()
        results.put((name, wins, losses, traceback.format_exc()))
        raise
    results.put((name, wins, losses, None))
