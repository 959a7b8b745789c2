"""Validate stage: every search method the version supports, run on the held-out test queries
in Spark (``pipeline.retrieval``: per round, the driver holds each query's small state and the
executors find the next candidates in their partitions), the served search chosen on the
tuning queries (``curindex.quality.selection``), every method's Top-k-Recall@budget on the reporting
queries (``curindex.quality.validation``), and the quality gate's verdict on the served search."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

import numpy as np

from curindex.config import BuildConfig, objective_figures
from curindex.ops.plan import bi_depth, needs_biencoder, pool_depth
from curindex.pipeline.context import BuildContext
from curindex.pipeline.kinds import QuerySide, kind_for
from curindex.pipeline.pooled import PairScores, Pools, Scored, pool_truth
from curindex.pipeline.retrieval import (
    EXACT,
    Codecs,
    SparkRetriever,
    WithTruth,
    shard_retriever,
)
from curindex.pipeline.stages.write_shards import extras
from curindex.quality.figures import Figure, by_figure
from curindex.quality.gate import gate_failures, lift_failures
from curindex.quality.pooling import mean_interval, recall_bounds
from curindex.quality.selection import Choice, choose, guarded, made_choosable, served_at
from curindex.quality.validation import Job, Table, candidates, jobs, table
from curindex.search.methods import Ask, Plan, SearchSpec, run_plans
from curindex.search.shardindex import EXTRA_TRAINED, is_exact
from curindex.store import FileEntry

log = logging.getLogger("curindex.pipeline")


def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    cfg, v = ctx.cfg, ctx.cfg.validate
    anchors, prep = ctx.anchors(), ctx.load("prepare")
    n_test, n_tune = len(anchors.test_ids), ctx.n_tune()
    budgets = sorted(b for b in v.budgets if b < prep["items"])  # the whole corpus: no test
    objective = objective_figures(v)
    specs = candidates(cfg.index.methods, v.rounds, v.seed_sizes)
    reporting = range(n_tune, n_test)
    state: dict = {"n_test": len(reporting), "min_recall": dict(v.min_recall), "recall": {},
                   "recall_exact_search": {}, "index_recall_vs_exact": {}, "baseline": None,
                   "index": cfg.index.factory, "pool": None,
                   "min_lift_over_baseline": v.min_lift_over_baseline}
    tab, done = Table({}), None
    if n_test and budgets:
        ctx.spark.sparkContext.setJobDescription("curindex: validate every search method")
        try:
            tab, exact_cur, done = _measure(ctx, anchors, specs, budgets, n_tune)
        finally:
            ctx.spark.sparkContext.setJobDescription(None)
        state.update(exact_cur)
    # synthetic tuning queries (the first `made`) choose; the log's tuning queries then hold
    # each choice to the baseline
    made = anchors.made_tests
    choosing, guard = (range(made), range(made, n_tune)) if made else (range(n_tune), None)
    if made:
        log.info("choosing on %d tuning queries made from items ([validate] "
                 "synthetic_tuning), held to the baseline on the log's %d", made, len(guard))
    choices = _choices(tab, specs, budgets, sorted(v.ks), choosing, guard)
    served_by = {b: c.chosen for b, c in choices.items()}
    default = served_at(served_by, objective[0].budget) if served_by else \
        min(specs, key=lambda x: x.complexity)  # nothing measured
    reason = choices[_budget_of(choices, objective[0].budget)].reason if choices else \
        "no test query or budget to measure on: the simplest method serves"
    rows = _method_rows(tab, specs, objective, choosing, reporting, default)
    state["recall"] = _served_recall(tab, served_by, reporting)
    truth = prep.get("ground_truth") or {"kind": "exact", "why": ""}
    state.update(ground_truth=truth["kind"], ground_truth_why=truth["why"],
                 **_intervals(tab, served_by, reporting, done.pools if done else None))
    if done is not None and done.pools is not None:
        state["pool"] = _pool_info(done, reporting, ctx.cfg, budgets)
    if "bi-rerank" in cfg.index.methods:
        state["baseline"] = {"name": "bi-encoder",
                             "recall": tab.mean(SearchSpec("bi-rerank"), reporting)}
    failed = gate_failures(state["recall"], v.min_recall) + lift_failures(
        state["recall"], (state["baseline"] or {}).get("recall", {}), v.min_lift_over_baseline)
    _log(ctx, served_by, default, reason, state, failed)
    state.update(passed=not failed, failures=failed)
    state["search"] = {
        "default": {"method": default.method, "rounds": default.rounds, "seed": default.seed,
                    "seed_size": default.seed_size, "budget": objective[0].budget},
        "methods": rows,
        "selection": {
            "objective": [str(f) for f in objective], "n_tune": n_tune,
            "tune_ids": anchors.test_ids[:n_tune], "reason": reason,
            "synthetic": made,
            "candidates": _candidates(choices[_budget_of(choices, objective[0].budget)])
            if choices else []},
        "by_budget": [{"budget": b, "method": c.chosen.method, "rounds": c.chosen.rounds,
                       "seed_size": c.chosen.seed_size,
                       "objective": next(x.objective for x in c.verdicts
                                         if x.spec == c.chosen),
                       "reason": c.reason, "candidates": _candidates(c)}
                      for b, c in sorted(choices.items())],
    }
    return state, []


def _choices(tab: Table, specs: list[SearchSpec], budgets: list[int], ks: list[int],
             tuning: range, guard: range | None) -> dict[int, Choice]:
    """The search served at each budget: chosen on the mean of every k figure there on the
    `tuning` queries. Where they were made from items (`guard` not None: the log's tuning
    queries, perhaps none), they choose among the searches that score the bi-encoder's top
    items (``selection.made_choosable``) and the choice is held to the bi-encoder baseline at
    every figure there on the log's `guard` queries (``selection.guarded``)."""
    out, base = {}, SearchSpec("bi-rerank")
    for b in budgets:
        figures = [Figure(b, k) for k in ks if k < b]
        cand = {s: o for s in (specs if guard is None else made_choosable(specs))
                if (o := tab.objective(s, figures, tuning)) is not None}
        if not (figures and cand):
            continue
        out[b] = choose(cand)
        if guard is not None:
            out[b] = replace(out[b], reason=f"{out[b].reason} (queries made from items choose "
                             "among the searches seeded with the bi-encoder's top items)")
            if guard and base in cand:
                out[b] = guarded(out[b], base, *(
                    {str(f): float(tab.objective(s, [f], guard).mean()) for f in figures}
                    for s in (out[b].chosen, base)))
    return out


def _budget_of(choices: dict[int, Choice], budget: int) -> int:
    """The validated budget whose choice serves `budget` (``selection.served_at``'s rule)."""
    below = [b for b in choices if b <= budget]
    return max(below) if below else min(choices)


def _served_recall(tab: Table, served_by: dict[int, SearchSpec], reporting: range
                   ) -> dict[str, float]:
    """The served search's figures: at each budget, those of the search served there."""
    out = {}
    for b, spec in served_by.items():
        out.update({f: x for f, x in tab.mean(spec, reporting).items()
                    if Figure.parse(f).budget == b})
    return dict(sorted(out.items(), key=lambda kv: Figure.parse(kv[0])))


def _intervals(tab: Table, served_by: dict[int, SearchSpec], reporting: range,
               pools: Pools | None) -> dict:
    """The served figures' 95% intervals over the reporting queries, and with pooled truth
    the bounds that also hold what the pools may have missed: recall minus the audit's upper
    estimate of missed top-k items over k, up to the pooled recall (every answer is inside
    its pool)."""
    interval, bounds = {}, {}
    for b, spec in served_by.items():
        for name, by_query in tab.values.get(spec, {}).items():
            f = Figure.parse(name)
            vals = [by_query[t] for t in reporting if t in by_query]
            if f.budget != b or len(vals) != len(reporting) or not vals:
                continue
            low, high = mean_interval(vals)
            interval[name] = (max(0.0, low), min(1.0, high))
            if pools is not None:  # every answer is inside its pool
                high = float(np.mean([pools.misses[f.k][t].high for t in reporting]))
                bounds[name] = recall_bounds(float(np.mean(vals)), high, k=f.k)
    return {"recall_interval": interval, "recall_bounds": bounds}


def _pool_info(done: Searches, reporting: range, cfg: BuildConfig, budgets: list[int]) -> dict:
    pools, n = done.pools, max(1, len(done.truth))
    misses = {}
    for k, per_query in pools.misses.items():
        rows = [per_query[t] for t in reporting]
        total = tuple(float(sum(getattr(m, a) for m in rows)) for a in ("estimate", "low",
                                                                      "high"))
        for b in budgets:
            if k < b:
                misses[str(Figure(b, k))] = total
    return {"depth": pool_depth(cfg, budgets), "audit_items": cfg.validate.audit_items,
            "pairs": done.scores.pairs, "pairs_per_query": round(done.scores.pairs / n, 1),
            "mean_pool_size": round(float(np.mean(pools.sizes)), 1), "misses": misses}


def _candidates(choice: Choice) -> list[dict]:
    return [{"method": x.spec.method, "rounds": x.spec.rounds, "seed_size": x.spec.seed_size,
             "objective": x.objective, "below_best": x.below_best,
             "below_best_se": min(x.below_best_se, 1.0), "measurably_worse": x.measurably_worse,
             "within_margin": x.within_margin} for x in choice.verdicts]


def _measure(ctx: BuildContext, anchors, specs: list[SearchSpec], budgets: list[int],
             n_tune: int) -> tuple[Table, dict, Searches]:
    """Run every job; returns the recall table, and for an approximate item-vector index the
    plain CUR figures with exact search and the index's overlap with it."""
    run = searches(ctx, anchors, specs, budgets)
    tab = table(run.plans, run.jobs, run.truth, ks=run.ks, budgets_of=run.budgets_of,
                **run.ranking)
    extra: dict = {}
    if run.approximate and "cur" in ctx.cfg.index.methods:
        extra = _exact_cur(ctx, run, range(n_tune, len(anchors.test_ids)))
    return tab, extra, run


@dataclass
class Searches:
    """Every search validation ran, with what it needs to rank their answers."""

    jobs: list[Job]
    plans: list[Plan]
    truth: list[list[str]]  # per test query, the exact (or pooled) top max(ks) items
    ks: list[int]
    budgets_of: dict[int, list[int]]
    ranking: dict  # `curindex.quality.validation.returned`'s keyword arguments
    rows: object  # the score rows (a DataFrame) the retrievals ran over
    codecs: Codecs
    approximate: bool
    scores: PairScores | None = None  # pooled validation: the pairs it scored
    pools: Pools | None = None


def searches(ctx: BuildContext, anchors, specs: list[SearchSpec], budgets: list[int]
             ) -> Searches:
    """Run every (search, budget, test query) of validation in Spark; with pooled truth,
    score what the searches retrieve as they go, then each test query's pool."""
    cfg, k_i, kind = ctx.cfg, len(anchors.item_ids), kind_for(ctx.cfg)
    n_test, n_items = len(anchors.test_ids), ctx.load("prepare")["items"]
    rows = ctx.scores().select("item_id", "scores", "bi").coalesce(
        2 * ctx.spark.sparkContext.defaultParallelism)
    names = extras(cfg)
    first = kind.test_column(ctx)  # score column of test query 0 (None: pooled truth)
    codecs = Codecs(features=kind.features(ctx), first=first, layout=names,
                    x=ctx.store.read_bytes(ctx.version, EXTRA_TRAINED) if names else None)
    exact_index = is_exact(cfg.index.factory, max(k_i, 1))
    approx = None if exact_index else shard_retriever(
        ctx.spark, rows, shards=ctx.load("write_shards")["shards"],
        read_shard=ctx.read_shard_file, first=first, nprobe=cfg.index.nprobe,
        ef_search=cfg.index.ef_search)
    ks = sorted(cfg.validate.ks)
    inner = SparkRetriever(ctx.spark, rows, codecs, approx_e=approx)
    scores = None if ctx.exact_truth() else PairScores(ctx, ctx.scores(), anchors.test_texts)
    # Exact truth: the exact top items of every test query come with round 1's candidates.
    retriever = Scored(inner, scores) if scores else WithTruth(
        inner, [Ask(t, EXACT, np.zeros(0), max(ks), frozenset()) for t in range(n_test)])
    # Detached anchors (incremental builds) still cost a call each, but are no results.
    detached = set(ctx.load("prepare").get("detached_anchors", []))
    live = np.array([a not in detached for a in anchors.item_ids], dtype=bool)
    live_ids = [a for a, ok in zip(anchors.item_ids, live, strict=True) if ok]
    bi = None
    # the bi-encoder's neighbours join a pool only where the build embedded every item
    if any(s.seed == "bi-encoder" for s in specs) or kind.NEEDS_BI or (
            scores and needs_biencoder(cfg)):
        from curindex.scoring.biencoder import get_biencoder

        bi = get_biencoder().encode(anchors.test_texts)  # [n_test, dim]
    side = kind.query_side(ctx, anchors, bi, scores)
    job_list = jobs(specs, n_test=n_test, budgets=budgets, k_i=k_i)
    plans = [_plan(j, side, bi, live_ids, k_i=k_i, n_items=n_items) for j in job_list]
    # the driver's cores are idle while it solves: every one re-solves weights
    resolve = {"anchor_columns": side.anchor_columns, "rcond": side.rcond,
               "workers": os.cpu_count() or 1, "cos": set(names) == {"h", "bi"},
               "latent": side.latent}
    run_plans(plans, retriever, **resolve)
    pools = None
    if scores is not None:
        v = cfg.validate
        pools = pool_truth(scores, inner, plans, bi, live_ids, n_test=n_test, ks=ks,
                           depth=pool_depth(cfg, budgets), bi_depth=bi_depth(cfg, budgets),
                           audit=v.audit_items, n_items=n_items, seed=cfg.anchors.seed,
                           **resolve)
        truth = pools.truth
    else:
        if retriever.truth_found is None:  # no plan ran (nothing to retrieve at any budget)
            retriever.retrieve([])
        truth = [keys for keys, _ in retriever.truth_found or []]
    ranking = {"anchor_keys": live_ids, "live": live, "k_i": k_i,
               "n_items": n_items, "n_anchors_listed": len(live_ids)}
    return Searches(job_list, plans, truth, ks, {t: budgets for t in range(n_test)}, ranking,
                    rows, codecs, not exact_index, scores, pools)


def _plan(job: Job, side: QuerySide, bi: np.ndarray | None, live_ids: list[str], *, k_i: int,
          n_items: int) -> Plan:
    sizes = job.spec.sizes(job.budget, k_i=k_i, n_items=n_items, n_anchors_listed=len(live_ids))
    if job.spec.seed == "anchors":
        c = side.anchor_exact[job.query]
        return Plan(job.query, job.spec, job.budget, sizes, c, c, frozenset(live_ids))
    prior = side.priors[job.query] if side.priors is not None else np.zeros(0)
    return Plan(job.query, job.spec, job.budget, sizes, bi[job.query], np.zeros(0), frozenset(),
                prior=prior)


def _exact_cur(ctx: BuildContext, run: Searches, reporting: range) -> dict:
    """Plain CUR with exact search over the item vectors, beside the approximate index: its
    recall, and the share of its candidates the index returned."""
    cur = [(p, j) for p, j in zip(run.plans, run.jobs, strict=True)
           if j.spec.method == "cur" and j.query in reporting]
    again = [Plan(p.query, p.spec, p.budget, p.sizes, p.first, p.anchor_exact, p.excluded)
             for p, _ in cur]
    exact = SparkRetriever(ctx.spark, run.rows, run.codecs)
    run_plans(again, Scored(exact, run.scores) if run.scores else exact, anchor_columns=None,
              rcond=0.0)
    tab = table(again, [j for _, j in cur], run.truth, ks=run.ks, budgets_of=run.budgets_of,
                **run.ranking)
    r, overlap = run.ranking, {}
    for b in run.budgets_of[reporting.start] if len(reporting) else []:
        shares = []
        for (p, _), q in zip(cur, again, strict=True):
            n = p.spec.sizes(b, k_i=r["k_i"], n_items=r["n_items"],
                             n_anchors_listed=r["n_anchors_listed"])[0] if b > r["k_i"] else 0
            if n:
                shares.append(len(set(p.keys[:n]) & set(q.keys[:n])) / n)
        if shares:
            overlap[str(b)] = float(np.mean(shares))
    return {"recall_exact_search": tab.mean(SearchSpec("cur"), reporting),
            "index_recall_vs_exact": overlap}


def _method_rows(tab: Table, specs: list[SearchSpec], objective: list[Figure], tuning: range,
                 reporting: range, served: SearchSpec) -> list[dict]:
    """Each method at its best parameters on the tuning queries (the served one at its
    own), with its figures on the reporting queries."""
    rows = []
    for method in dict.fromkeys(s.method for s in specs):
        family = [s for s in specs if s.method == method]
        if served in family:
            best = served
        else:
            scored = [(float(o.mean()), s) for s in family
                      if (o := tab.objective(s, objective, tuning)) is not None
                      and len(o)]
            best = max(scored, key=lambda x: (x[0], [-c for c in x[1].complexity]))[1] \
                if scored else family[0]
        rows.append({"method": best.method, "rounds": best.rounds,
                     "seed_size": best.seed_size, "recall": tab.mean(best, reporting),
                     "served": best == served})
    return rows


def _log(ctx: BuildContext, served_by: dict[int, SearchSpec], default: SearchSpec, reason: str,
         state: dict, failed: list[str]) -> None:
    log.info("served search: %s (%s)", default.describe(), reason)
    for b, spec in sorted(served_by.items()):
        log.info("served at budget %d: %s", b, spec.describe())
    base = (state["baseline"] or {}).get("recall", {})
    for figure, value in by_figure(state["recall"]):
        b = base.get(str(figure))
        log.info("%s = %.4f%s", figure.label, value,
                 f" (bi-encoder {b:.4f})" if b is not None else "")
    for failure in failed:
        log.error("quality gate: %s (version %s)", failure, ctx.version)
