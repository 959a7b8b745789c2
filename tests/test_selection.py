"""Choosing the served search (pure): on constructed per-query figures where the best method is
known, and the tuning / reporting split of the test queries."""

from __future__ import annotations

import numpy as np
import pytest

from curindex.quality.figures import Figure
from curindex.quality.selection import MIN_QUERIES, choose
from curindex.quality.validation import candidates, jobs
from curindex.search.methods import SearchSpec

BI = SearchSpec("bi-rerank")
CUR = SearchSpec("cur")
AD2, AD4 = SearchSpec("adaptive", 2), SearchSpec("adaptive", 4)
SEEDED = SearchSpec("bi-seeded", 4, 50)


def test_a_clearly_better_method_is_chosen():
    rng = np.random.default_rng(0)
    n = 40
    base = rng.uniform(0.5, 0.8, n)
    values = {BI: base, CUR: base - 0.05, AD2: base + 0.02, AD4: base + 0.03,
              SEEDED: np.minimum(1.0, base + 0.25)}
    choice = choose(values)
    assert choice.chosen == SEEDED
    assert "best objective" in choice.reason
    worse = {v.spec for v in choice.verdicts if v.measurably_worse}
    assert worse == {BI, CUR, AD2, AD4}
    assert [v.spec for v in choice.verdicts] == sorted(values, key=lambda s: s.complexity)


def test_within_noise_the_simplest_method_serves():
    rng = np.random.default_rng(1)
    n = 40
    base = rng.uniform(0.4, 0.9, n)
    noise = rng.choice([-0.1, 0.0, 0.1], size=n)
    values = {BI: base, CUR: base + noise, SEEDED: base + noise[::-1] + 0.005}
    choice = choose(values)
    assert choice.chosen == BI
    assert not any(v.measurably_worse for v in choice.verdicts)
    assert "simplest method not measurably worse" in choice.reason


def test_a_methods_parameters_are_its_best_on_the_tuning_queries():
    """Within the method chosen, the parameters with the best objective serve, even when a
    simpler setting of the same method is within noise."""
    rng = np.random.default_rng(2)
    n = 60
    base = rng.uniform(0.3, 0.5, n)
    noise = np.tile([0.1, -0.1], n // 2)
    values = {BI: base, SearchSpec("bi-seeded", 2, 25): base + 0.40 + noise,
              SearchSpec("bi-seeded", 4, 50): base + 0.41}
    choice = choose(values)
    assert choice.chosen == SearchSpec("bi-seeded", 4, 50)
    assert not [v for v in choice.verdicts if v.spec.method == "bi-seeded"
                and v.measurably_worse]


def test_too_few_tuning_queries_fall_back_to_the_simplest_method():
    n = MIN_QUERIES - 1
    values = {CUR: np.full(n, 0.5), SEEDED: np.full(n, 1.0)}
    choice = choose(values)
    assert choice.chosen == CUR
    assert f"{n} tuning queries are too few" in choice.reason
    with pytest.raises(ValueError, match="no candidate"):
        choose({})


def test_the_tuning_and_reporting_splits_are_disjoint_and_cover_the_test_queries():
    specs = candidates(["bi-rerank", "cur", "adaptive", "bi-seeded"], [2, 4], [25, 50])
    assert specs[0] == BI and specs[1] == CUR
    objective = [Figure.parse("10@200")]
    run = jobs(specs, n_tune=7, n_test=20, objective=objective, budgets=[25, 100, 200, 500],
               k_i=50)
    tuning = {j.query for j in run if j.budget == 200 and j.query < 7}
    reporting = {j.query for j in run if j.query >= 7}
    assert tuning == set(range(7)) and reporting == set(range(7, 20))
    # tuning queries run every candidate at the objective's budget only
    assert {(j.spec, j.budget) for j in run if j.query == 0} == {(s, 200) for s in specs}
    # reporting queries run every method at every budget it can run at (one-round methods
    # once, at their largest budget: smaller budgets are a prefix)
    at = {(j.spec, j.budget) for j in run if j.query == 7}
    assert (CUR, 500) in at and (CUR, 100) not in at and (BI, 500) in at
    assert (SearchSpec("adaptive", 2), 100) in at and (SearchSpec("adaptive", 2), 25) not in at
    assert (SearchSpec("bi-seeded", 2, 25), 25) not in at  # its seed is the whole budget
