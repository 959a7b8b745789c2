"""Pooled validation in Spark (``[validate] ground_truth = "pooled"``): the test queries are not
scored against every item; what validation needs of them is scored as it goes, and their exact
top items are the top of a pool (``curindex.quality.pooling``).

- ``PairScores``: the exact score of (test query, item) pairs, scored in Spark when first asked
  for (grouped by item, the scorer once per Python worker) and kept on the driver, so an item
  that several searches retrieve for a query costs one call;
- ``Scored``: the methods' retriever over the score rows (which hold no test score), whose
  candidates get their exact scores from ``PairScores``; every round is one retrieval job and
  one scoring job;
- ``pool_truth``: after every search ran, each query's pool is scored, and its top items are
  the truth: everything scored for it, every method's next ``depth`` items past what it scored
  at the largest budget (its ranking read further: one more round of its deepest search, its
  weights re-solved on everything that search scored), the bi-encoder's top ``depth`` items,
  and ``audit`` uniformly random items; the audit items outside the pool estimate what it
  missed.

Everything kept on the driver is per test query and bounded by the pool: independent of the
corpus size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curindex.pipeline.context import BuildContext
from curindex.pipeline.pairs import score_pairs_now
from curindex.pipeline.retrieval import SparkRetriever
from curindex.quality.pooling import Misses, misses, truth_from_pool
from curindex.search.methods import Ask, Plan, deeper_asks


class PairScores:
    """Exact scores of (test query number, item id) pairs, scored once each."""

    def __init__(self, ctx: BuildContext, rows: DataFrame, queries: list[str]) -> None:
        self.ctx, self.rows, self.queries = ctx, rows, queries
        self.cache: dict[tuple[int, str], float] = {}

    @property
    def pairs(self) -> int:
        """Pairs scored so far (validation's exact-model calls)."""
        return len(self.cache)

    def get(self, pairs: Sequence[tuple[int, str]]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(pairs) if p not in self.cache]
        if missing:
            cfg = self.ctx.cfg
            got = score_pairs_now(self.ctx.spark, missing, self.rows, queries=self.queries,
                                  scorer_cfg=cfg.scorer, fingerprint=self.ctx.inputs["scorer"],
                                  block_items=cfg.spark.block_items)
            self.cache.update(zip(zip(got.column("query").to_pylist(),
                                      got.column("item_id").to_pylist(), strict=True),
                                  got.column("score").to_pylist(), strict=True))
            lost = [p for p in missing if p not in self.cache]
            if lost:
                raise KeyError(f"no item {lost[0][1]!r} to score for test query {lost[0][0]}")
        return np.array([self.cache[p] for p in pairs], dtype=np.float64)


class Scored:
    """A retriever whose candidates' exact scores come from `PairScores`."""

    def __init__(self, inner: SparkRetriever, scores: PairScores) -> None:
        self.inner, self.scores = inner, scores

    def retrieve(self, asks: Sequence[Ask]) -> list[tuple[list[str], np.ndarray]]:
        found = self.inner.retrieve(asks)
        pairs = [(a.query, k) for a, (keys, _) in zip(asks, found, strict=True) for k in keys]
        exact = iter(self.scores.get(pairs))
        return [(keys, np.array([next(exact) for _ in keys], dtype=np.float64))
                for keys, _ in found]

    def columns(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return self.inner.columns(keys)


@dataclass(frozen=True)
class Pools:
    """Per test query: its truth (pool keys, best first, up to max k), and per k the audit's
    estimate of the true top-k items the pool missed."""

    truth: list[list[str]]
    misses: dict[int, list[Misses]]  # k -> per query
    sizes: list[int]


def deepest(plans: Sequence[Plan]) -> list[Plan]:
    """Per test query and method, the plan that scored most (the largest budget, then the
    most rounds and seed): the one whose ranking the pool reads further."""
    best: dict[tuple[int, str], Plan] = {}
    for p in plans:
        if p.spec.method == "bi-rerank":  # its ranking is the bi-encoder's, pooled apart
            continue
        key = (p.query, p.spec.method)
        if key not in best or (p.budget, p.spec.complexity) > (best[key].budget,
                                                                best[key].spec.complexity):
            best[key] = p
    return list(best.values())


def pool_truth(scores: PairScores, retriever: SparkRetriever, plans: Sequence[Plan],
               bi: np.ndarray | None, anchor_ids: Sequence[str], *, n_test: int, ks: list[int],
               depth: int, bi_depth: int, audit: int, n_items: int, seed: int,
               **deeper: object) -> Pools:
    """Score every test query's pool and take its top items as the truth (module docstring).
    `deeper`: `deeper_asks`'s keyword arguments (what re-solves a plan's weights)."""
    pool: list[dict[str, None]] = [dict.fromkeys(anchor_ids) for _ in range(n_test)]
    for p in plans:
        pool[p.query].update(dict.fromkeys(p.keys))
    asks = deeper_asks(deepest(plans), depth, retriever, **deeper) if depth else []
    if bi is not None and bi_depth:  # the bi-encoder's top items
        asks += [Ask(t, "bi", bi[t], bi_depth, frozenset()) for t in range(n_test)]
    for a, (keys, _) in zip(asks, retriever.retrieve(asks) if asks else [], strict=True):
        pool[a.query].update(dict.fromkeys(keys))  # one retrieval job for every query
    sample = audit_sample(retriever.rows, audit, seed=seed)
    inside = [set(p) for p in pool]
    scored = scores.get([(t, k) for t in range(n_test) for k in [*pool[t], *sample]])
    at = 0
    truth, missed = [], {k: [] for k in ks}
    for t in range(n_test):
        keys = list(pool[t])
        s_pool = scored[at:at + len(keys)]
        s_audit = scored[at + len(keys):at + len(keys) + len(sample)]
        at += len(keys) + len(sample)
        outside = np.array([s for s, k in zip(s_audit, sample, strict=True)
                            if k not in inside[t]])
        truth.append(truth_from_pool(keys, s_pool, max(ks)))
        for k in ks:
            missed[k].append(misses(s_pool, outside, k=k, n_items=n_items,
                                    pool_size=len(keys)))
    return Pools(truth, missed, [len(p) for p in pool])


def audit_sample(rows: DataFrame, n: int, *, seed: int) -> list[str]:
    """`n` item ids chosen uniformly at random (a seeded hash of the id: the same items for any
    partitioning)."""
    if n <= 0:
        return []
    key = F.xxhash64(F.lit(f"curindex:audit:{seed}"), F.col("item_id"))
    return [r["item_id"] for r in rows.select("item_id", key.alias("_k"))
            .orderBy("_k", "item_id").limit(n).collect()]
