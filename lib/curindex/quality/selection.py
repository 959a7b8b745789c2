"""Choosing the search a version serves, pure numpy.

Every candidate search (a method at one set of parameters) was run on the tuning test queries;
its objective on a query is the mean of the objective figures (e.g. Top-10-Recall@200) there.
The rule: a candidate is *measurably worse* than the best one (the highest mean objective) when
the paired per-query difference is positive beyond noise (its mean minus ``Z`` standard errors
stays above zero) and there are at least ``MIN_QUERIES`` tuning queries to tell. The version
serves the simplest *method* with a candidate that is not measurably worse than the best
(``curindex.search.methods.METHODS``: bi-encoder rerank, plain CUR, adaptive, bi-seeded), at that
method's best parameters (rounds, seed size: the highest mean objective, the simpler on a
tie). With few tuning queries (a small query log) nothing is measurably worse, so the simplest
method serves; the recorded reason says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from curindex.search.methods import SearchSpec

Z = 2.0  # one-sided, about 97.7%
MIN_QUERIES = 10


@dataclass(frozen=True)
class Verdict:
    spec: SearchSpec
    objective: float  # mean over the tuning queries
    below_best: float  # mean paired difference to the best candidate
    below_best_se: float
    measurably_worse: bool


@dataclass(frozen=True)
class Choice:
    chosen: SearchSpec
    reason: str
    verdicts: tuple[Verdict, ...]  # every candidate, simplest first


def choose(per_query: Mapping[SearchSpec, np.ndarray]) -> Choice:
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
        verdicts.append(Verdict(s, means[s], float(d.mean()) if n else 0.0, se, worse))
    method = next(v.spec.method for v in verdicts if not v.measurably_worse)
    chosen = max((s for s in specs if s.method == method),
                 key=lambda s: (means[s], [-c for c in s.complexity]))
    if n < MIN_QUERIES:
        reason = (f"{n} tuning queries are too few to tell methods apart (at least "
                  f"{MIN_QUERIES} are needed): the simplest method serves")
    elif chosen == best:
        reason = (f"{best.describe()} has the best objective on {n} tuning queries "
                  f"({means[best]:.4f}) and no simpler method is within noise of it")
    else:
        reason = (f"{chosen.describe()} ({means[chosen]:.4f}) is the simplest method not "
                  f"measurably worse than the best, {best.describe()} ({means[best]:.4f}), on "
                  f"{n} tuning queries")
    return Choice(chosen, reason, tuple(verdicts))
