"""Progress of a long stage, logged on the driver at a steady rate.

Workers add the items they finish to a Spark accumulator; Spark merges a task's additions into
the driver's value when the task ends, so the figures move in steps of one task (a partition)
and never count work that is not done. A driver thread logs them every `every_s` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("curindex.pipeline")


def progress_line(
    stage: str, done: int, total: int | None, pairs_per_item: int, elapsed_s: float, *,
    unit: str = "items",
) -> str:
    """One progress line: `unit`s done / total, pairs/s since the stage began (`unit`s/s when
    a pass scores no pair: the bi-encoder's embeddings alone), and the ETA."""
    rate = done * max(pairs_per_item, 1) / elapsed_s if elapsed_s > 0 else 0.0
    rate_unit = "pairs/s" if pairs_per_item > 0 else f"{unit}/s"
    if not total:
        return (f"{stage}: {done:,} {unit} scored, {rate:,.1f} {rate_unit}, "
                f"{_duration(elapsed_s)} in")
    done = min(done, total)  # a retried task adds its items twice
    eta = f"ETA {_duration(elapsed_s * (total - done) / done)}" if done else "ETA unknown"
    return (
        f"{stage}: {done:,}/{total:,} {unit} ({100 * done / total:.1f}%), "
        f"{rate:,.1f} {rate_unit}, {eta}"
    )


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressLogger:
    """Context manager: logs `progress_line(...)` every `every_s` seconds while the block runs,
    and once more at the end. `read_done` returns the items finished so far. `samples` holds
    (seconds since the start, items done) every `sample_s` seconds and at the end: the stage's
    throughput over time, for the build report."""

    def __init__(
        self,
        stage: str,
        read_done: Callable[[], int],
        *,
        total: int | None,
        pairs_per_item: int,
        every_s: float,
        sample_s: float = 5.0,
        unit: str = "items",
    ) -> None:
        self.stage, self.read_done, self.unit = stage, read_done, unit
        self.total, self.pairs_per_item, self.every_s = total, pairs_per_item, every_s
        self.sample_s = min(sample_s, every_s)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{stage}-progress", daemon=True)
        self._t0 = 0.0

    def line(self) -> str:
        return progress_line(
            self.stage, self.read_done(), self.total, self.pairs_per_item,
            time.perf_counter() - self._t0, unit=self.unit,
        )

    def _sample(self) -> None:
        self.samples.append((round(time.perf_counter() - self._t0, 3), int(self.read_done())))

    def _run(self) -> None:
        next_log = self.every_s
        while not self._stop.wait(self.sample_s):
            self._sample()
            if time.perf_counter() - self._t0 >= next_log:
                log.info("%s", self.line())
                next_log += self.every_s

    def __enter__(self) -> ProgressLogger:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self._sample()
            log.info("%s", self.line())
