"""Locks with an owner and an expiry, created and replaced only by conditional writes.

A lock is a small JSON object (owner token, host, pid, since, expires_at). Acquiring creates it
if absent; a lock whose expiry has passed, whose holder is a process of this host that no
longer exists, or that is not a lock document at all, is taken over by a conditional replace of
exactly what was read, so of two takers one wins. While held, a
daemon thread renews the expiry every ttl/3 by a conditional replace of its own last write; if a
renewal finds the lock replaced, the holder has lost it and :meth:`Lock.check` says so. Release
deletes the lock only if it still holds the holder's last write.

Expiry uses wall-clock time, as the holders may be different machines: clocks must agree to
well within the ttl.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from curindex.errors import ConflictError
from curindex.store.cas import Cas, PreconditionFailed, Tagged
from curindex.store.io import dumps, loads


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its document says."""

    owner: str | None
    host: str
    pid: int | None
    since: str
    expires_at: float

    @classmethod
    def parse(cls, data: bytes) -> Holder:
        """The holder a lock document names; one that is no lock document counts as expired."""
        try:
            doc = loads(data)
            pid = doc.get("pid")
            return cls(str(doc["owner"]), str(doc.get("host", "?")),
                       pid if type(pid) is int else None, str(doc.get("since", "?")),
                       float(doc["expires_at"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls(None, "?", None, "?", 0.0)

    def live(self, now: float | None = None) -> bool:
        """Unexpired, and not a process of this host that has died (a killed build's lock is
        free at once for the next attempt on the same machine, not after its expiry)."""
        if self.expires_at <= (time.time() if now is None else now):
            return False
        return not (self.host == socket.gethostname() and self.pid is not None
                    and not _process_exists(int(self.pid)))

    def describe(self) -> str:
        """Who holds the lock, for a message: host and time as the lock document says (read
        from the store, so escaped: a control character there must not reach a terminal)."""
        return (f"{_printable(self.host)} pid {self.pid} since {_printable(self.since)} "
                f"(expires {_expiry(self.expires_at)})")


def _printable(text: str) -> str:
    """`text` unchanged when every character is printable, else in repr form."""
    return text if text.isprintable() else repr(text)


def _expiry(t: float) -> str:
    try:
        return iso(t)
    except (OverflowError, OSError, ValueError):  # a forged expiry beyond any date
        return repr(t)


def _process_exists(pid: int) -> bool:
    # A reused pid reads as alive: the safe direction (the lock then waits for its expiry).
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def read_holder(cas: Cas, path: str) -> Holder | None:
    """The holder of the lock at ``path``, None when there is no lock there."""
    got = cas.read(path)
    return None if got is None else Holder.parse(got.data)


class Lock:
    """The lock at ``path``, named ``name`` in messages. Use it in a ``with`` block, or call
    :meth:`acquire`, :meth:`check` and :meth:`release` (e.g. from a Spark driver).

    ``heartbeat`` renews the expiry from a daemon thread while held; without it the lock lapses
    ``ttl_s`` after it was taken, and :meth:`check` then fails.
    """

    def __init__(self, cas: Cas, path: str, *, name: str, ttl_s: float,
                 heartbeat: bool = True) -> None:
        if not ttl_s > 0:
            raise ValueError(f"lock {name}: ttl_s must be > 0, not {ttl_s!r}")
        self.cas, self.path, self.name, self.ttl_s = cas, path, name, ttl_s
        self.heartbeat = heartbeat
        self.owner = uuid.uuid4().hex
        self._tag: str | None = None
        self._since = ""
        self._expires_at = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mu = threading.Lock()  # between the heartbeat and check/release

    def _body(self) -> tuple[bytes, float]:
        expires = time.time() + self.ttl_s
        return dumps({"owner": self.owner, "lock": self.name, "host": socket.gethostname(),
                      "pid": os.getpid(), "since": self._since, "expires_at": expires}), expires

    def _try(self) -> Holder | None:
        """Take the lock if free or expired; else return the live holder."""
        got: Tagged | None = self.cas.read(self.path)
        if got is not None:
            holder = Holder.parse(got.data)
            if holder.live():
                return holder
        self._since = iso(time.time())
        body, expires = self._body()
        try:
            tag = self.cas.write(self.path, body, expect=None if got is None else got.tag)
        except PreconditionFailed:
            # Another taker won between our read and our write: it is the holder now.
            return read_holder(self.cas, self.path) or Holder(None, "?", None, "?", 0.0)
        with self._mu:
            self._tag, self._expires_at, self._lost = tag, expires, None
        return None

    def acquire(self, *, wait_s: float = 0.0,
                give_up: Callable[[], None] | None = None) -> Lock:
        """Take the lock, or raise :class:`ConflictError` naming the holder: at once when
        ``wait_s`` is 0, else after polling for that long (``give_up`` may raise to stop
        waiting sooner). Returns the lock."""
        if self._tag is not None:
            raise ConflictError(f"{self.name} is already held by this lock object")
        deadline = time.monotonic() + wait_s
        pause = 0.005
        while (holder := self._try()) is not None:
            if time.monotonic() >= deadline:
                waited = f" after waiting {wait_s:.0f}s" if wait_s else ""
                raise ConflictError(f"{self.name} is held by {holder.describe()}{waited}")
            if give_up is not None:
                give_up()
            time.sleep(random.uniform(pause, 2 * pause))
            pause = min(pause * 1.5, 1.0)
        if self.heartbeat:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name=f"lock {self.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def renew(self) -> None:
        """Push the expiry ``ttl_s`` ahead, by a conditional replace of our last write; raises
        :class:`ConflictError` if the lock was taken over or removed meanwhile."""
        with self._mu:
            if self._tag is None:
                raise ConflictError(f"{self.name} is not held")
            if self._lost:
                raise ConflictError(f"{self.name} was lost: {self._lost}")
            body, expires = self._body()
            try:
                self._tag = self.cas.write(self.path, body, expect=self._tag)
            except PreconditionFailed:
                holder = read_holder(self.cas, self.path)
                self._lost = ("taken over by " + holder.describe() if holder is not None
                              else "removed by another process")
                raise ConflictError(f"{self.name} was lost: {self._lost}") from None
            self._expires_at = expires

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except ConflictError:
                return  # lost (or released): check() says which
            except Exception:
                # A failed renewal (network, throttling) is retried at the next beat; if
                # none succeeds before the expiry, check() reports the lock expired.
                continue

    def check(self) -> None:
        """Raise :class:`ConflictError` unless this lock is still held: not lost to a takeover,
        not expired."""
        with self._mu:
            if self._tag is None:
                raise ConflictError(f"{self.name} is not held")
            if self._lost:
                raise ConflictError(f"{self.name} was lost: {self._lost}")
            if self._expires_at <= time.time():
                raise ConflictError(f"{self.name} expired at {iso(self._expires_at)} "
                                    f"(ttl {self.ttl_s}s) without being renewed")

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def release(self) -> bool:
        """Delete the lock if it is still ours; whether it was."""
        self._stop_heartbeat()
        with self._mu:
            tag, self._tag = self._tag, None
        return tag is not None and self.cas.delete(self.path, expect=tag)

    def abandon(self) -> None:
        """Stop renewing without deleting, as a crashed holder would: the lock then expires."""
        self._stop_heartbeat()
        with self._mu:
            self._tag = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, {self.path!r})"

