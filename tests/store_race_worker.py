"""One of two processes that race to publish a version per round (see test_store.py).

Runs under multiprocessing's spawn start method, so it imports nothing from the test modules.
"""

from __future__ import annotations

import traceback
from typing import Any

from curindex.errors import StoreError
from curindex.store import Store


def race(uri: str, name: str, rounds: int, barrier: Any, results: Any, settle: float) -> None:
    """Per round: read CURRENT with the rival, then both publish against what they read."""
    store = Store.open(uri)
    store.lease_settle = settle
    wins, losses = 0, []
    try:
        for i in range(rounds):
            barrier.wait()
            expected = store.current()
            barrier.wait()
            try:
                store.publish(f"r{i:03d}-{name}", expect_current=expected)
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
