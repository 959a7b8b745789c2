"""Pooled ground truth, pure: the audit's estimate of what a pool missed, and the bounds it puts
on a method's recall, against the exact answer on generated scores."""

from __future__ import annotations

import numpy as np
import pytest

from curindex.quality.pooling import (
    misses,
    proportion_interval,
    recall_bounds,
    resolve_truth,
    truth_from_pool,
)


def _recall(answer: np.ndarray, truth: np.ndarray, k: int) -> float:
    return len(set(answer[:k].tolist()) & set(truth[:k].tolist())) / k


def test_the_proportion_interval_is_clopper_pearson():
    from scipy.stats import binom

    low, high = proportion_interval(3, 200)
    # the exact binomial tails at the bounds are 2.5% each
    assert binom.sf(2, 200, low) == pytest.approx(0.025, abs=1e-6)
    assert binom.cdf(3, 200, high) == pytest.approx(0.025, abs=1e-6)
    assert proportion_interval(0, 50)[0] == 0.0 and proportion_interval(50, 50)[1] == 1.0
    assert proportion_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("seed", range(6))
def test_a_method_left_out_of_the_pool_is_bounded_around_its_exact_recall(seed):
    """Two methods search a generated corpus; the pool holds A's candidates, the bi-encoder's
    top items and an audit sample, but not B's. B's pooled recall is wrong, and its interval
    (pooled recall -/+ the audit's upper estimate of misses over k) holds its exact recall; A's
    holds A's."""
    rng = np.random.default_rng(seed)
    n, k, budget, n_q = 4000, 10, 200, 30
    exact = rng.normal(size=(n_q, n))
    bi = exact + rng.normal(scale=1.5, size=(n_q, n))  # a weaker estimate of the same
    est_a = exact + rng.normal(scale=0.7, size=(n_q, n))
    est_b = exact + rng.normal(scale=0.4, size=(n_q, n))  # B is the better method
    audit = rng.choice(n, 800, replace=False)
    lows, highs, exact_b, lows_a, exact_a, pooled_a = [], [], [], [], [], []
    for q in range(n_q):
        truth = np.argsort(-exact[q])[:k]
        a = np.argsort(-est_a[q])[:budget]
        b = np.argsort(-est_b[q])[:budget]
        pool = np.unique(np.concatenate([a, np.argsort(-bi[q])[:400], audit]))
        pooled_truth = np.array(truth_from_pool(pool.tolist(), exact[q, pool], k))
        inside = np.isin(audit, pool)
        m = misses(exact[q, pool], exact[q, audit[~inside]], k=k, n_items=n,
                   pool_size=len(pool))
        answer_b = b[np.argsort(-exact[q, b])]
        answer_a = a[np.argsort(-exact[q, a])]
        low, high = recall_bounds(_recall(answer_b, pooled_truth, k), m.high, k=k,
                                  inside=False)
        lows.append(low)
        highs.append(high)
        exact_b.append(_recall(answer_b, truth, k))
        pa = _recall(answer_a, pooled_truth, k)
        lows_a.append(recall_bounds(pa, m.high, k=k)[0])
        pooled_a.append(pa)
        exact_a.append(_recall(answer_a, truth, k))
    assert np.mean(lows) <= np.mean(exact_b) <= np.mean(highs)
    assert np.mean(lows_a) <= np.mean(exact_a) <= np.mean(pooled_a)  # A is inside the pool


def test_a_pool_that_holds_everything_misses_nothing():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=500)
    m = misses(scores, np.zeros(0), k=10, n_items=500, pool_size=500)
    assert (m.estimate, m.low, m.high) == (0.0, 0.0, 0.0)
    assert truth_from_pool(list(range(500)), scores, 3) == np.argsort(-scores)[:3].tolist()


def test_the_audit_estimate_is_the_scaled_share_above_the_threshold():
    pool = np.array([5.0, 4.0, 3.0, 2.0])  # k = 2: threshold 4.0
    outside = np.array([4.5, 1.0, 0.0, 9.0, -1.0, 2.0, 3.0, 3.9])  # 2 of 8 beat it
    m = misses(pool, outside, k=2, n_items=1004, pool_size=4)
    assert m.estimate == pytest.approx(2)  # capped at k: 2 / 8 x 1000 = 250 > 2
    m = misses(pool, outside, k=3, n_items=20, pool_size=4)  # threshold 3.0: 3 of 8 beat it
    assert m.estimate == pytest.approx(3 / 8 * 16 if 3 / 8 * 16 < 3 else 3)
    low, high = proportion_interval(3, 8)
    assert (m.low, m.high) == (pytest.approx(min(3, low * 16)), pytest.approx(min(3, high * 16)))


def test_auto_truth_is_exact_while_it_costs_at_most_half_the_index():
    assert resolve_truth("auto", n_test=50, n_items=10_000, index_pairs=200 * 10_000)[0] == \
        "exact"
    kind, why = resolve_truth("auto", n_test=50, n_items=10_000, index_pairs=45_000)
    assert kind == "pooled" and "500,000" in why and "45,000" in why
    assert resolve_truth("exact", n_test=50, n_items=10, index_pairs=1) == (
        "exact", "[validate] ground_truth says so")
