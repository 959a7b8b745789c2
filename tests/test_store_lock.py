"""Build locks on a local store: held, expired and taken over, renewed by the heartbeat, lost to
a takeover. test_store_s3.py runs the tests in __all__ against S3."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import UTC, datetime

import pytest

from curindex.errors import ConflictError
from curindex.store import Store
from test_store import reopen

__all__ = [
    "test_a_dead_holder_on_this_host_frees_the_lock_at_once",
    "test_clearing_build_state_keeps_the_lock",
    "test_expired_lock_is_taken_over_and_its_old_holder_finds_out",
    "test_heartbeat_finds_a_takeover",
    "test_heartbeat_keeps_the_lock_past_its_ttl",
    "test_lock_held_fails_at_once_naming_the_holder",
    "test_of_many_takers_of_an_expired_lock_exactly_one_wins",
    "test_plain_acquire_check_release",
]


def lock_path(store: Store, version: str) -> str:
    return f"{store.root}/locks/build-{version}.json"


def read_lock(store: Store, version: str) -> dict | None:
    try:
        with store.fs.open_input_stream(lock_path(store, version)) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def write_lock(store: Store, version: str, doc: dict) -> None:
    """Write a lock document by hand, as another process (or a dead one) left it."""
    if store.fs.get_file_info(f"{store.root}/locks").type.name == "NotFound":
        store.fs.create_dir(f"{store.root}/locks")
    with store.fs.open_output_stream(lock_path(store, version)) as f:
        f.write(json.dumps(doc).encode())


def test_lock_held_fails_at_once_naming_the_holder(store: Store) -> None:
    with store.build_lock("v1", ttl_s=30.0):
        doc = read_lock(store, "v1")
        started = time.monotonic()
        with pytest.raises(ConflictError) as err:
            reopen(store.uri).build_lock("v1").acquire()
        assert time.monotonic() - started < 5.0  # refused at once, not after waiting
        expires = datetime.fromtimestamp(doc["expires_at"], UTC).isoformat(timespec="seconds")
        message = str(err.value)
        for part in ("build lock of version v1", f"{socket.gethostname()} pid {os.getpid()}",
                     f"since {doc['since']}", f"expires {expires}"):
            assert part in message, (part, message)
        with store.build_lock("v2"):  # another version's build is not held up
            pass
    with store.build_lock("v1"):  # released, so free again
        pass
    assert read_lock(store, "v1") is None


def test_a_dead_holder_on_this_host_frees_the_lock_at_once(store: Store) -> None:
    """A killed build's lock (its process gone, its expiry far away) is taken over by the next
    attempt on the same machine; a live holder's, or another host's, is not."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    far = time.time() + 3600
    for host, pid, free in ((socket.gethostname(), int(dead.stdout), True),
                            (socket.gethostname(), os.getpid(), False),
                            ("another-host", int(dead.stdout), False)):
        write_lock(store, "v", {"owner": "x", "host": host, "pid": pid, "since": "then",
                                "expires_at": far})
        if free:
            with store.build_lock("v"):
                assert read_lock(store, "v")["pid"] == os.getpid()
        else:
            with pytest.raises(ConflictError, match=f"{host} pid {pid}"):
                store.build_lock("v").acquire()


def test_plain_acquire_check_release(store: Store) -> None:
    lock = store.build_lock("v1")
    with pytest.raises(ConflictError, match="not held"):
        lock.check()
    assert lock.acquire() is lock
    lock.check()
    assert read_lock(store, "v1")["owner"] == lock.owner
    assert lock.release() is True
    assert read_lock(store, "v1") is None
    with pytest.raises(ConflictError, match="not held"):
        lock.check()
    assert lock.release() is False  # nothing left to release


def test_expired_lock_is_taken_over_and_its_old_holder_finds_out(store: Store) -> None:
    stalled = store.build_lock("v1", ttl_s=2.0, heartbeat=False).acquire()
    with pytest.raises(ConflictError, match="is held by"):
        reopen(store.uri).build_lock("v1").acquire()
    time.sleep(max(0.0, read_lock(store, "v1")["expires_at"] - time.time()) + 0.1)  # never renewed
    with pytest.raises(ConflictError, match="expired at"):
        stalled.check()
    taker = reopen(store.uri).build_lock("v1", ttl_s=30.0).acquire()
    assert read_lock(store, "v1")["owner"] == taker.owner
    with pytest.raises(ConflictError, match=f"taken over by {socket.gethostname()}"):
        stalled.renew()
    assert stalled.release() is False  # not ours any more: the taker's lock stays
    assert read_lock(store, "v1")["owner"] == taker.owner
    taker.check()
    assert taker.release() is True
    assert read_lock(store, "v1") is None


def test_of_many_takers_of_an_expired_lock_exactly_one_wins(store: Store) -> None:
    write_lock(store, "v1", {"owner": "dead", "host": "gone", "pid": 1, "since": "then",
                             "expires_at": time.time() - 10})
    takers = [reopen(store.uri).build_lock("v1", ttl_s=30.0) for _ in range(8)]
    barrier = threading.Barrier(len(takers))
    won: list[str] = []
    refused: list[str] = []

    def take(lock: object) -> None:
        barrier.wait()
        try:
            won.append(lock.acquire().owner)
        except ConflictError as e:
            refused.append(str(e))

    threads = [threading.Thread(target=take, args=(lock,)) for lock in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and len(refused) == len(takers) - 1, (won, refused)
    assert read_lock(store, "v1")["owner"] == won[0]
    assert all("is held by" in msg for msg in refused), refused
    for lock in takers:
        lock.release()
    assert read_lock(store, "v1") is None


def test_heartbeat_keeps_the_lock_past_its_ttl(store: Store) -> None:
    lock = store.build_lock("v1", ttl_s=0.6).acquire()
    first = read_lock(store, "v1")["expires_at"]
    time.sleep(1.5)  # more than twice the ttl
    lock.check()
    assert read_lock(store, "v1")["expires_at"] > first + 0.5  # renewed, more than once
    with pytest.raises(ConflictError, match="is held by"):
        reopen(store.uri).build_lock("v1").acquire()
    assert lock.release() is True


def test_heartbeat_finds_a_takeover(store: Store) -> None:
    lock = store.build_lock("v1", ttl_s=0.6).acquire()
    intruder = {"owner": "intruder", "host": "elsewhere", "pid": 7, "since": "now",
                "expires_at": time.time() + 60}
    write_lock(store, "v1", intruder)  # as a process that (wrongly) took it would
    time.sleep(0.6)  # a beat or more
    with pytest.raises(ConflictError, match="was lost: taken over by elsewhere pid 7"):
        lock.check()
    assert lock.release() is False
    assert read_lock(store, "v1")["owner"] == "intruder"


def test_clearing_build_state_keeps_the_lock(store: Store) -> None:
    store.save_build_state("v1", "score", {"done": 3})
    with store.build_lock("v1") as lock:
        store.clear_build_state("v1")
        lock.check()
        assert store.load_build_state("v1", "score") is None
        with pytest.raises(ConflictError):
            reopen(store.uri).build_lock("v1").acquire()
