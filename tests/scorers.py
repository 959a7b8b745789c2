"""Scorers used by the tests through `kind = "callable"` (imported by Spark's workers too)."""

from __future__ import annotations

import os
import uuid

import numpy as np

from curindex.config import ScorerConfig
from curindex.scoring.toy import ToyScorer


class _Counting(ToyScorer):
    """The toy scorer, logging each construction and each block to files in options.log_dir."""

    def __init__(self, cfg: ScorerConfig) -> None:
        super().__init__(cfg, fingerprint="")
        self.log_dir = cfg.options["log_dir"]
        self._write("loads")

    def _write(self, kind: str) -> None:
        with open(os.path.join(self.log_dir, f"{kind}-{os.getpid()}-{uuid.uuid4().hex}"), "w"):
            pass

    def score_block(self, queries, items):
        self._write("blocks")
        return super().score_block(queries, items)


def counting(cfg: ScorerConfig) -> _Counting:
    return _Counting(cfg)


class _NaN(ToyScorer):
    def score_block(self, queries, items):
        out = super().score_block(queries, items)
        out[0, -1] = np.nan
        return out


def nan_scores(cfg: ScorerConfig) -> _NaN:
    return _NaN(cfg, fingerprint="")


class _WrongShape(ToyScorer):
    def score_block(self, queries, items):
        return super().score_block(queries, items)[:, :-1]


def wrong_shape(cfg: ScorerConfig) -> _WrongShape:
    return _WrongShape(cfg, fingerprint="")


class _Constant:
    def score_block(self, queries, items):
        return np.ones((len(queries), len(items)), dtype=np.float32)


def constant(cfg: ScorerConfig) -> _Constant:
    return _Constant()


def not_a_scorer(cfg: ScorerConfig) -> object:
    return object()


class _Slow(ToyScorer):
    """The toy scorer, slowed down so a test can act while scoring is under way."""

    def score_block(self, queries, items):
        import time

        time.sleep(float(self.cfg.options.get("delay_s", "0.3")))
        return super().score_block(queries, items)


def slow(cfg: ScorerConfig) -> _Slow:
    return _Slow(cfg, fingerprint="")


class _Noisy(ToyScorer):
    """The toy scorer plus deterministic per-pair noise (options.noise, a hash of both texts),
    so the score matrix is not exactly low rank and the inversion's cutoff matters."""

    def score_block(self, queries, items):
        import zlib

        noise = float(self.cfg.options.get("noise", "0.1"))
        out = super().score_block(queries, items).astype(np.float64)
        for a, q in enumerate(queries):
            for b, t in enumerate(items):
                h = zlib.crc32(f"{q}\x00{t}".encode()) / 2**32 - 0.5
                out[a, b] += noise * h
        return out.astype(np.float32)


def noisy(cfg: ScorerConfig) -> _Noisy:
    return _Noisy(cfg, fingerprint="")


class _Recording(ToyScorer):
    """The toy scorer, writing every (query, item) pair it scores inside a Spark task, as JSON
    lines, to a file per process in options.log_dir (the driver's calls, such as the build
    plan's timing sample, are not the build's pairs)."""

    def __init__(self, cfg: ScorerConfig) -> None:
        super().__init__(cfg, fingerprint="")
        self.path = os.path.join(cfg.options["log_dir"], f"pairs-{os.getpid()}.jsonl")

    def score_block(self, queries, items):
        import json

        from pyspark import TaskContext

        if TaskContext.get() is None:
            return super().score_block(queries, items)
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps([q, t]) + "\n" for q in queries for t in items)
        return super().score_block(queries, items)


def recording(cfg: ScorerConfig) -> _Recording:
    return _Recording(cfg)


def recorded_pairs(log_dir) -> list[tuple[str, str]]:
    """Every (query, item) pair a `recording` scorer wrote under `log_dir`."""
    import json
    from pathlib import Path

    return [tuple(json.loads(line)) for p in sorted(Path(log_dir).glob("pairs-*.jsonl"))
            for line in p.read_text(encoding="utf-8").splitlines()]


class _Raising(ToyScorer):
    """The toy scorer, failing inside Spark's tasks (so in the score stage, after the
    driver's plan sample has scored fine): a bug in a user's scorer, mid-build."""

    def score_block(self, queries, items):
        from pyspark import TaskContext

        if TaskContext.get() is not None:
            raise RuntimeError("broken on purpose")
        return super().score_block(queries, items)


def raising(cfg: ScorerConfig) -> _Raising:
    return _Raising(cfg, fingerprint="")


class _Failing(ToyScorer):
    """The toy scorer, raising for any query that holds the word in options.fail_on (default
    "explode"): a model that fails on some inputs; each block delayed by
    $CURINDEX_TEST_SCORER_DELAY_S seconds."""

    def _check(self, queries):
        word = self.cfg.options.get("fail_on", "explode")
        bad = [q for q in queries if word in q.split()]
        if bad:
            raise RuntimeError(f"the model failed on {bad[0]!r}")

    def score_block(self, queries, items):
        import time

        self._check(queries)
        # slowed down where a test says so (not an option: options enter the fingerprint)
        time.sleep(float(os.environ.get("CURINDEX_TEST_SCORER_DELAY_S") or 0))
        return super().score_block(queries, items)


def failing(cfg: ScorerConfig) -> _Failing:
    return _Failing(cfg, fingerprint="")
