"""Choosing the served search (pure): on constructed per-query figures where the best method is
known, and the tuning / reporting split of the test queries."""

from __future__ import annotations

import numpy as np
import pytest

from curindex.config import ValidateConfig
from curindex.quality.selection import (
    MARGIN,
    MIN_QUERIES,
    choose,
    guarded,
    made_choosable,
    served_at,
)
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


def test_a_simpler_method_serves_only_within_the_practical_margin():
    rng = np.random.default_rng(1)
    n = 40
    base = rng.uniform(0.4, 0.9, n)
    noise = np.tile([-0.1, 0.1], n // 2)  # mean 0
    # within the margin: the simplest method serves
    close = choose({BI: base, CUR: base + noise, SEEDED: base + MARGIN * 0.8})
    assert close.chosen == BI
    assert "simplest method within 0.005" in close.reason
    assert all(v.within_margin for v in close.verdicts if v.spec in (BI, SEEDED))
    # 0.012 better on average, but so noisy that no paired test would call the simpler one
    # worse: the better one serves (a weaker method is not served for being "within noise")
    noisy = base + 0.012 + rng.choice([-0.3, 0.3], size=n)
    far = choose({BI: base, SEEDED: noisy})
    assert far.chosen == SEEDED
    verdicts = {v.spec: v for v in far.verdicts}
    assert not verdicts[BI].measurably_worse and not verdicts[BI].within_margin


def test_the_search_at_a_budget_is_the_choice_of_the_largest_validated_budget_below():
    choices = {50: BI, 200: CUR, 500: SEEDED}
    assert [served_at(choices, b) for b in (10, 50, 100, 199, 200, 499, 500, 10_000)] == \
        [BI, BI, BI, BI, CUR, CUR, SEEDED, SEEDED]
    with pytest.raises(ValueError, match="no validated budget"):
        served_at({}, 100)


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


def test_queries_made_from_items_choose_among_bi_encoder_seeded_searches():
    everything = [BI, CUR, AD2, AD4, SEEDED, SearchSpec("bi-seeded", 2, 25)]
    assert made_choosable(everything) == [BI, SEEDED, SearchSpec("bi-seeded", 2, 25)]
    # a version without the bi-encoder keeps every candidate
    assert made_choosable([CUR, AD2, AD4]) == [CUR, AD2, AD4]
    # adaptive, best on the made queries, is not among the choices; the best seeded one is
    made = {AD4: np.full(20, 1.0), BI: np.full(20, 0.8), SEEDED: np.full(20, 0.9)}
    assert choose({s: made[s] for s in made_choosable(list(made))}).chosen == SEEDED


@pytest.mark.parametrize(("chosen_log", "serves"), [
    ({"1@50": 0.9, "10@50": 0.95}, BI),  # below the baseline at 1@50
    ({"1@50": 1.0, "10@50": 0.85}, BI),  # above at 1@50, below at 10@50
    ({"1@50": 1.0, "10@50": 0.9}, SEEDED),  # at or above at every figure
])
def test_a_choice_made_on_synthetic_queries_is_held_to_the_baseline_on_the_log(chosen_log,
                                                                                serves):
    synthetic = {BI: np.full(20, 0.8), SEEDED: np.full(20, 1.0)}
    choice = guarded(choose(synthetic), BI, chosen_log, {"1@50": 0.95, "10@50": 0.9})
    assert choice.chosen == serves
    assert choice.verdicts == choose(synthetic).verdicts
    assert ("the baseline serves" in choice.reason) == (serves == BI)
    # no log query to hold it to, or the baseline chosen: unchanged
    assert guarded(choose(synthetic), BI, {}, {}).chosen == SEEDED
    assert guarded(choose({BI: np.ones(20)}), BI, {"1@50": 0.0}, {"1@50": 1.0}).chosen == BI


def test_every_candidate_runs_at_every_budget_on_every_test_query():
    specs = candidates(["bi-rerank", "cur", "adaptive", "bi-seeded"], [2, 4], [25, 50])
    assert specs[0] == BI and specs[1] == CUR
    run = jobs(specs, n_test=20, budgets=[25, 100, 200, 500], k_i=50)
    assert {j.query for j in run} == set(range(20))
    for t in (0, 7):  # a tuning query and a reporting one run the same searches
        at = {(j.spec, j.budget) for j in run if j.query == t}
        # one-round methods once, at their largest budget: smaller budgets are a prefix
        assert (CUR, 500) in at and (CUR, 100) not in at and (BI, 500) in at
        assert (SearchSpec("adaptive", 2), 100) in at and (SearchSpec("adaptive", 2), 25) \
            not in at
        assert (SearchSpec("bi-seeded", 2, 25), 25) not in at  # its seed is the whole budget
        assert (SearchSpec("bi-seeded", 4, 50), 200) in at


def test_the_default_seed_sizes_give_every_default_budget_from_50_a_seed_of_half_of_it():
    v = ValidateConfig()
    run = jobs(candidates(["bi-rerank", "bi-seeded"], v.rounds, v.seed_sizes), n_test=1,
               budgets=v.budgets, k_i=50)
    seeds = {b: {j.spec.seed_size for j in run if j.budget == b and j.spec.rounds > 1}
             for b in v.budgets}
    for b in v.budgets:
        assert all(s < b for s in seeds[b])  # a seed of the whole budget is bi-rerank
        assert b < 50 or b // 2 in seeds[b], (b, seeds[b])
    assert max(seeds[max(v.budgets)]) == max(v.budgets) // 2
