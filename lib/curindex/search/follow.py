"""Following a store's publishes: poll its CURRENT pointer and refresh a reader when it names
another version (``Searcher.follow``).

A version that fails to open is tried again only after a back-off that doubles from the poll
interval up to `max_backoff_s`: a corrupt version stays corrupt (it costs one verification per
back-off, not one per poll), while a store that was unreachable for a while is read again.
A new publish, or CURRENT moving back to the version serving, ends the back-off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("curindex.search")

# Called with what failed (a version id, or "CURRENT" when the pointer could not be read) and
# the error.
OnFailure = Callable[[str, BaseException], None]
POINTER = "CURRENT"


class Follower:
    """Polls `current()` (the version CURRENT names) every `every_s` seconds on a daemon thread
    and calls `refresh(version)` when it differs from `serving()`. Errors never stop it: each is
    passed to `on_failure` (the refresh itself logs why a version cannot serve)."""

    def __init__(self, *, current: Callable[[], str], serving: Callable[[], str],
                 refresh: Callable[[str], object], every_s: float,
                 max_backoff_s: float = 300.0, on_failure: OnFailure | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0 seconds, got {every_s}")
        self.current, self.serving, self.refresh = current, serving, refresh
        self.every_s, self.max_backoff_s = every_s, max_backoff_s
        self.on_failure, self.clock = on_failure, clock
        self._failed: tuple[str, int, float] | None = None  # what, failures in a row, retry at
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> str | None:
        """One poll: the version refreshed to, or None when there was nothing to do or it
        failed (then passed to `on_failure`) or is backing off."""
        if self._backing_off(POINTER):
            return None
        try:
            target = self.current()
        except Exception as e:  # the pointer unreadable (store down): try again after a while
            return self._failure(POINTER, e)
        if target == self.serving():
            self._failed = None
            return None
        if self._backing_off(target):
            return None
        try:
            self.refresh(target)
        except Exception as e:
            return self._failure(target, e)
        self._failed = None
        return target

    def _backing_off(self, what: str) -> bool:
        return self._failed is not None and self._failed[0] == what \
            and self.clock() < self._failed[2]

    def _failure(self, what: str, error: BaseException) -> None:
        n = self._failed[1] + 1 if self._failed is not None and self._failed[0] == what else 1
        self._failed = (what, n, self.clock() + min(self.every_s * 2 ** n, self.max_backoff_s))
        if what == POINTER:
            log.warning("cannot read the store's CURRENT pointer (%s: %s); trying again in "
                        "%.0f s", type(error).__name__, error, self._failed[2] - self.clock())
        if self.on_failure is not None:
            self.on_failure(what, error)
        return None

    def start(self) -> Follower:
        if self._thread is not None:
            raise RuntimeError("this Follower was started already")
        self._thread = threading.Thread(target=self._run, name="curindex-follow", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.poll()
            except Exception:  # an on_failure callback's own bug must not end the polling
                log.exception("curindex-follow: a poll failed")

    def stop(self, timeout_s: float | None = 30.0) -> None:
        """Stop polling; waits up to `timeout_s` for a refresh under way to end."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
