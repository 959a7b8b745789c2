"""Choosing the search a version serves, pure numpy: one choice per validated budget.

Every candidate search (a method at one set of parameters) was run on the tuning test queries at
every validated budget; at a budget its objective on a query is the mean of every Top-k-Recall
figure measured there (k < budget). At each budget the rule is: the best candidate has the
highest mean objective; the version serves the simplest *method*
(``curindex.search.methods.METHODS``: bi-encoder rerank, plain CUR, adaptive, bi-seeded) with a
candidate whose mean is within ``MARGIN`` of the best (a practical margin: a difference that
small does not matter to a user, where "not significantly worse" on a few dozen queries let a
much weaker method serve), at that method's best parameters (rounds, seed size: the highest
mean, the simpler on a tie). With fewer than ``MIN_QUERIES`` tuning queries nothing can be
told apart: the simplest method serves (the bi-encoder baseline when the version has it), and
the recorded reason says so.

Each candidate's paired difference to the best (mean and standard error over the tuning
queries) is recorded beside, for whoever reads the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from curindex.config import MIN_TUNING_QUERIES
from curindex.search.methods import SearchSpec

MARGIN = 0.005  # a simpler method serves when its mean objective is within this of the best
Z = 2.0  # the recorded "measurably worse": one-sided, about 97.7%
MIN_QUERIES = MIN_TUNING_QUERIES


@dataclass(frozen=True)
class Verdict:
    spec: SearchSpec
    objective: float  # mean over the tuning queries
    below_best: float  # mean paired difference to the best candidate
    below_best_se: float
    measurably_worse: bool  # below the best by more than Z standard errors
    within_margin: bool  # at most MARGIN below the best: it may serve


@dataclass(frozen=True)
class Choice:
    chosen: SearchSpec
    reason: str
    verdicts: tuple[Verdict, ...]  # every candidate, simplest first


def choose(per_query: Mapping[SearchSpec, np.ndarray], *, margin: float = MARGIN) -> Choice:
    """The served search from each candidate's objective per tuning query ([n_tune] each, the
    same queries in the same order). Raises ValueError when there is no candidate."""
    if not per_query:
        raise ValueError("no candidate search to choose from")
    specs = sorted(per_query, key=lambda s: s.complexity)
    values = {s: np.asarray(per_query[s], dtype=np.float64) for s in specs}
    n = len(next(iter(values.values())))
    means = {s: float(values[s].mean()) if n else 0.0 for s in specs}
    best = max(specs, key=lambda s: (means[s], [-c for c in s.complexity]))
    verdicts = []
    for s in specs:
        d = values[best] - values[s]
        se = float(d.std(ddof=1) / np.sqrt(n)) if n >= 2 else float("inf")
        worse = n >= MIN_QUERIES and float(d.mean()) - Z * se > 0
        verdicts.append(Verdict(s, means[s], float(d.mean()) if n else 0.0, se, worse,
                                n < MIN_QUERIES or means[best] - means[s] <= margin))
    method = next(v.spec.method for v in verdicts if v.within_margin)
    chosen = max((s for s in specs if s.method == method),
                 key=lambda s: (means[s], [-c for c in s.complexity]))
    if n < MIN_QUERIES:
        reason = (f"{n} tuning queries are too few to tell methods apart (at least "
                  f"{MIN_QUERIES} are needed): the simplest method serves")
    elif chosen == best:
        reason = (f"{best.describe()} has the best objective on {n} tuning queries "
                  f"({means[best]:.4f}); no simpler method is within {margin:g} of it")
    else:
        reason = (f"{chosen.describe()} ({means[chosen]:.4f}) is the simplest method within "
                  f"{margin:g} of the best, {best.describe()} ({means[best]:.4f}), on {n} "
                  "tuning queries")
    return Choice(chosen, reason, tuple(verdicts))


def made_choosable(specs: Sequence[SearchSpec]) -> list[SearchSpec]:
    """The candidates that queries made from items may choose among: the searches that score
    the bi-encoder's top items (bi-encoder rerank, bi-seeded), where the version has any. A
    query made from an item's first sentence comes from the same distribution as synthetic
    anchor queries and sits next to the items it was cut from, so it measures an anchor-seeded
    search (plain CUR, adaptive) where that search is at its best; the log's queries may lie
    where the anchors say little, and only a search that also scores the bi-encoder's top
    items keeps the baseline's own best candidates there."""
    seeded = [s for s in specs if s.seed == "bi-encoder"]
    return seeded or list(specs)


def guarded(choice: Choice, baseline: SearchSpec, chosen_log: Mapping[str, float],
            baseline_log: Mapping[str, float]) -> Choice:
    """A choice made on synthetic tuning queries, held to the bi-encoder baseline on the log's
    own tuning queries (`chosen_log`, `baseline_log`: each figure at the budget, the mean over
    those queries): where the chosen search is below the baseline at any figure, the baseline
    serves. Queries made from items favour what the items' own scores predict; the log's
    queries, however few, are the only sample of what users ask."""
    if choice.chosen == baseline or not chosen_log:
        return choice
    below = [f for f in chosen_log if chosen_log[f] < baseline_log[f]]
    if not below:
        return choice
    f = below[0]
    return Choice(baseline, f"{choice.chosen.describe()}, chosen on queries made from items, "
                  f"is below {baseline.describe()} at {f} on the log's tuning queries "
                  f"({chosen_log[f]:.4f} < {baseline_log[f]:.4f}): the baseline serves",
                  choice.verdicts)


def served_at(choices: Mapping[int, SearchSpec], budget: int) -> SearchSpec:
    """The search served at `budget`: the choice made for the largest validated budget at
    most `budget` (below the smallest validated budget, the smallest one's)."""
    if not choices:
        raise ValueError("no validated budget")
    budgets = sorted(choices)
    below = [b for b in budgets if b <= budget]
    return choices[below[-1] if below else budgets[0]]
