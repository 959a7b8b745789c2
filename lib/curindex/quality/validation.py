"""Validation of every search method, pure numpy: which searches to run on which test queries,
their Top-k-Recall@budget from what they returned, and the table a version records.

The build's test queries are split in two (``[factorize] tune_fraction``, the first ``n_tune``
tune): every candidate search runs on every test query at every budget; the search served at
each budget is chosen on the tuning queries (``curindex.quality.selection``), and only the
other (reporting) queries' figures are reported and gated. One-round
methods (plain CUR, bi-encoder rerank) retrieve the same items in the same order at any budget,
so each runs once, at its largest budget, and smaller budgets take a prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curindex.quality.figures import Figure
from curindex.search.methods import Key, Plan, SearchSpec, ranked


def candidates(methods: Sequence[str], rounds: Sequence[int], seed_sizes: Sequence[int]
               ) -> list[SearchSpec]:
    """Every search the build tries: each configured method at each parameter setting."""
    out = []
    for m in methods:
        if m in ("cur", "bi-rerank"):
            out.append(SearchSpec(m))
        elif m == "adaptive":
            out += [SearchSpec(m, r) for r in sorted(set(rounds))]
        else:
            out += [SearchSpec(m, r, s) for r in sorted(set(rounds))
                    for s in sorted(set(seed_sizes))]
    return sorted(out, key=lambda s: s.complexity)


def runnable(spec: SearchSpec, budget: int, k_i: int) -> bool:
    """Anchor-seeded methods need a budget above the k_i anchor items; a bi-seeded one above
    its seed."""
    if spec.seed == "anchors":
        return budget > k_i
    return spec.method == "bi-rerank" or budget > spec.seed_size


@dataclass(frozen=True)
class Job:
    """One search to run: a spec at a budget on one test query (its number)."""

    spec: SearchSpec
    budget: int
    query: int


def jobs(specs: Sequence[SearchSpec], *, n_test: int, budgets: Sequence[int], k_i: int
         ) -> list[Job]:
    """Every (spec, budget, query) run: every candidate at every budget on every test query
    (the tuning ones choose the search served at each budget, the reporting ones measure it);
    one-round specs once, at their largest budget."""
    out = []
    for t in range(n_test):
        for spec in specs:
            bs = [b for b in sorted(budgets) if runnable(spec, b, k_i)]
            if spec.rounds == 1 and bs:
                bs = [max(bs)]
            out += [Job(spec, b, t) for b in bs]
    return out


def returned(plan: Plan, budget: int, *, anchor_keys: Sequence[Key], live: np.ndarray,
             k: int, k_i: int, n_items: int, n_anchors_listed: int) -> list[Key]:
    """The top k a plan's search returns at `budget` (a one-round plan run at a larger budget
    cut to this one's retrievals), as the Searcher ranks them."""
    n = plan.spec.sizes(budget, k_i=k_i, n_items=n_items,
                        n_anchors_listed=n_anchors_listed)[0] if plan.spec.rounds == 1 \
        else len(plan.keys)
    keys, exact = list(plan.keys[:n]), np.asarray(plan.exact[:n], dtype=np.float64)
    if plan.spec.seed == "anchors":
        keys = [*anchor_keys, *keys]
        exact = np.concatenate([plan.anchor_exact[live], exact])
    return ranked(keys, exact, k)[0]


def recall(got: Sequence[Key], truth: Sequence[Key], k: int) -> float:
    """Top-k-Recall of one query: the share of the exact top k among the returned top k."""
    return len(set(got[:k]) & set(truth[:k])) / k


@dataclass(frozen=True)
class Table:
    """Per spec: per figure name, per query (test query number -> recall)."""

    values: dict[SearchSpec, dict[str, dict[int, float]]]

    def mean(self, spec: SearchSpec, queries: range) -> dict[str, float]:
        out = {}
        for name, by_query in self.values.get(spec, {}).items():
            vals = [by_query[t] for t in queries if t in by_query]
            if vals and len(vals) == len(queries):
                out[name] = float(np.mean(vals))
        return dict(sorted(out.items(), key=lambda kv: Figure.parse(kv[0])))

    def objective(self, spec: SearchSpec, objective: Sequence[Figure], queries: range
                  ) -> np.ndarray | None:
        """Per tuning query, the mean of the objective figures (None when not measured)."""
        cols = [self.values.get(spec, {}).get(str(f)) for f in objective]
        if any(c is None or any(t not in c for t in queries) for c in cols):
            return None
        return np.array([np.mean([c[t] for c in cols]) for t in queries])


def table(plans: Sequence[Plan], job_list: Sequence[Job], truth: Sequence[Sequence[Key]], *,
          ks: Sequence[int], budgets_of: dict[int, Sequence[int]], **ranking) -> Table:
    """Recall of every plan at every k and budget it stands for: `budgets_of[query]` are the
    budgets measured on that query (a one-round plan covers each of them up to its own)."""
    values: dict[SearchSpec, dict[str, dict[int, float]]] = {}
    k_i = ranking["k_i"]
    for plan, job in zip(plans, job_list, strict=True):
        bs = [job.budget]
        if job.spec.rounds == 1:
            bs = [b for b in budgets_of[job.query] if b <= job.budget
                  and runnable(job.spec, b, k_i)]
        for b in bs:
            top = returned(plan, b, k=max(ks), **ranking)
            for k in ks:
                if k < b:
                    values.setdefault(job.spec, {}).setdefault(str(Figure(b, k)), {})[
                        job.query] = recall(top, truth[job.query], k)
    return Table(values)
