"""Pooled ground truth, pure numpy: recall measured without scoring the whole corpus.

A test query's *pool* is every item any validated search scored for it, the bi-encoder's top
``depth`` items, and a uniform *audit* sample of the corpus, all scored exactly. Its "exact
top k" is the top k of the pool (TREC pooling: what no system found is taken as not
relevant). Every method's answer lies inside the pool, so against the true top k (``T``) of a
query, with ``M`` true top-k items the pool missed, a method's recall is at most its pooled
recall and at least its pooled recall minus ``M / k`` (the pool's top ``k - M`` are in ``T``);
an answer that holds items outside the pool (a method left out of it) can gain up to ``M / k``
as well.

``M`` is estimated from the audit: the audit items outside the pool that beat the query's k-th
pooled score, as a share of the audit items outside the pool, times the items outside the
pool (a binomial proportion), with a Clopper-Pearson 95% interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


def resolve_truth(setting: str, *, n_test: int, n_items: int, index_pairs: int
                  ) -> tuple[str, str]:
    """("exact" or "pooled", why) for `[validate] ground_truth`: "auto" scores the test
    queries against every item while that costs at most half the index's own pairs."""
    if setting != "auto":
        return setting, "[validate] ground_truth says so"
    cost = n_test * n_items
    if cost * 2 <= index_pairs:
        return "exact", (f"n_test x items = {cost:,} pairs, at most half the index's "
                         f"{index_pairs:,}")
    return "pooled", (f"n_test x items = {cost:,} pairs would be more than half the index's "
                      f"{index_pairs:,}")


@dataclass(frozen=True)
class Misses:
    """Estimated true top-k items the pool of one query missed: [low, high] a 95% interval."""

    estimate: float
    low: float
    high: float


def proportion_interval(hits: int, n: int, confidence: float = CONFIDENCE
                        ) -> tuple[float, float]:
    """Clopper-Pearson interval of a binomial proportion (`hits` of `n`); (0, 1) when n = 0."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    low = 0.0 if hits == 0 else float(beta.ppf(a / 2, hits, n - hits + 1))
    high = 1.0 if hits == n else float(beta.ppf(1 - a / 2, hits + 1, n - hits))
    return low, high


def misses(pool_scores: np.ndarray, audit_outside: np.ndarray, *, k: int, n_items: int,
           pool_size: int) -> Misses:
    """The pool's misses above its k-th score for one query.

    pool_scores: exact scores of the pool's items; audit_outside: exact scores of the audit
    items that are not in the pool; n_items: the corpus size; pool_size: the pool's items."""
    outside = max(0, n_items - pool_size)
    if outside == 0:
        return Misses(0.0, 0.0, 0.0)
    top = np.sort(np.asarray(pool_scores, dtype=np.float64))[::-1]
    threshold = top[k - 1] if len(top) >= k else -np.inf
    n = len(audit_outside)
    hits = int(np.count_nonzero(np.asarray(audit_outside) > threshold))
    low, high = proportion_interval(hits, n)
    # at most the k items of the true top k can be missed, and at most every item outside
    cap = float(min(k, outside))
    return Misses(min(cap, hits / n * outside) if n else 0.0, min(cap, low * outside),
                  min(cap, high * outside))


def recall_bounds(pooled: float, missed_high: float, *, k: int, inside: bool = True
                  ) -> tuple[float, float]:
    """The interval of a method's true recall from its pooled recall and an upper estimate of
    the true top-k items its query's pool missed: down by ``missed_high / k`` (the pool's top
    k holds that many items that are not truly top k), and, when the method's answer is not
    wholly inside the pool (`inside` False), up by as much (its items outside the pool may be
    the missed ones)."""
    gap = missed_high / k
    return max(0.0, pooled - gap), min(1.0, pooled + (0.0 if inside else gap))


def truth_from_pool(keys: Sequence, scores: np.ndarray, k: int) -> list:
    """The pool's top k keys by exact score (ties by pool order)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    return [keys[i] for i in order]


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE
                  ) -> tuple[float, float]:
    """A normal-approximation interval of the mean of per-query values."""
    from scipy.stats import norm

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        m = float(v.mean()) if len(v) else 0.0
        return m, m
    half = float(norm.ppf(0.5 + confidence / 2) * v.std(ddof=1) / np.sqrt(len(v)))
    return float(v.mean() - half), float(v.mean() + half)
