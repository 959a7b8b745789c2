"""Validate stage: every search method the version supports, run on the held-out test queries
in Spark (``pipeline.retrieval``: per round, the driver holds each query's small state and the
executors find the next candidates in their partitions), the served search chosen on the
tuning queries (``curindex.quality.selection``), every method's Top-k-Recall@budget on the reporting
queries (``curindex.quality.validation``), and the quality gate's verdict on the served search."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from curindex.config import objective_figures
from curindex.pipeline.context import BuildContext
from curindex.pipeline.kinds import QuerySide, kind_for
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
from curindex.quality.selection import choose
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
                   "index": cfg.index.factory,
                   "min_lift_over_baseline": v.min_lift_over_baseline}
    tab = Table({})
    if n_test and budgets:
        ctx.spark.sparkContext.setJobDescription("curindex: validate every search method")
        try:
            tab, exact_cur = _measure(ctx, anchors, specs, objective, budgets, n_tune)
        finally:
            ctx.spark.sparkContext.setJobDescription(None)
        state.update(exact_cur)
    choice = choose({s: o for s in specs
                     if (o := tab.objective(s, objective, range(n_tune))) is not None})
    served = choice.chosen
    rows = _method_rows(tab, specs, objective, n_tune, reporting, served)
    state["recall"] = tab.mean(served, reporting)
    if "bi-rerank" in cfg.index.methods:
        state["baseline"] = {"name": "bi-encoder",
                             "recall": tab.mean(SearchSpec("bi-rerank"), reporting)}
    failed = gate_failures(state["recall"], v.min_recall) + lift_failures(
        state["recall"], (state["baseline"] or {}).get("recall", {}), v.min_lift_over_baseline)
    _log(ctx, served, choice.reason, state, failed)
    state.update(passed=not failed, failures=failed)
    state["search"] = {
        "default": {"method": served.method, "rounds": served.rounds, "seed": served.seed,
                    "seed_size": served.seed_size, "budget": objective[0].budget},
        "methods": rows,
        "selection": {
            "objective": [str(f) for f in objective], "n_tune": n_tune,
            "tune_ids": anchors.test_ids[:n_tune], "reason": choice.reason,
            "candidates": [{"method": x.spec.method, "rounds": x.spec.rounds,
                            "seed_size": x.spec.seed_size, "objective": x.objective,
                            "below_best": x.below_best,
                            "below_best_se": min(x.below_best_se, 1.0),
                            "measurably_worse": x.measurably_worse}
                           for x in choice.verdicts]},
    }
    return state, []


def _measure(ctx: BuildContext, anchors, specs: list[SearchSpec], objective: list[Figure],
             budgets: list[int], n_tune: int) -> tuple[Table, dict]:
    """Run every job; returns the recall table, and for an approximate item-vector index the
    plain CUR figures with exact search and the index's overlap with it."""
    run = searches(ctx, anchors, specs, objective, budgets, n_tune)
    tab = table(run.plans, run.jobs, run.truth, ks=run.ks, budgets_of=run.budgets_of,
                **run.ranking)
    extra: dict = {}
    if run.approximate and "cur" in ctx.cfg.index.methods:
        extra = _exact_cur(ctx, run, range(n_tune, len(anchors.test_ids)))
    return tab, extra


@dataclass
class Searches:
    """Every search validation ran, with what it needs to rank their answers."""

    jobs: list[Job]
    plans: list[Plan]
    truth: list[list[str]]  # per test query, the exact top max(ks) items
    ks: list[int]
    budgets_of: dict[int, list[int]]
    ranking: dict  # `curindex.quality.validation.returned`'s keyword arguments
    rows: object  # the score rows (a DataFrame) the retrievals ran over
    codecs: Codecs
    approximate: bool


def searches(ctx: BuildContext, anchors, specs: list[SearchSpec], objective: list[Figure],
             budgets: list[int], n_tune: int) -> Searches:
    """Run every (search, budget, test query) of validation in Spark."""
    cfg, k_i, kind = ctx.cfg, len(anchors.item_ids), kind_for(ctx.cfg)
    n_test = len(anchors.test_ids)
    rows = ctx.scores().select("item_id", "scores", "bi").coalesce(
        2 * ctx.spark.sparkContext.defaultParallelism)
    names = extras(cfg)
    first = kind.test_column(ctx)  # score column of test query 0
    codecs = Codecs(features=kind.features(ctx), first=first, layout=names,
                    x=ctx.store.read_bytes(ctx.version, EXTRA_TRAINED) if names else None)
    exact_index = is_exact(cfg.index.factory, max(k_i, 1))
    approx = None if exact_index else shard_retriever(
        ctx.spark, rows, shards=ctx.load("write_shards")["shards"],
        read_shard=ctx.read_shard_file, first=first, nprobe=cfg.index.nprobe,
        ef_search=cfg.index.ef_search)
    ks = sorted(cfg.validate.ks)
    # The exact top items of every test query come with round 1's candidates.
    retriever = WithTruth(SparkRetriever(ctx.spark, rows, codecs, approx_e=approx),
                          [Ask(t, EXACT, np.zeros(0), max(ks), frozenset())
                           for t in range(n_test)])
    # Detached anchors (incremental builds) still cost a call each, but are no results.
    detached = set(ctx.load("prepare").get("detached_anchors", []))
    live = np.array([a not in detached for a in anchors.item_ids], dtype=bool)
    live_ids = [a for a, ok in zip(anchors.item_ids, live, strict=True) if ok]
    bi = None
    if any(s.seed == "bi-encoder" for s in specs) or kind.NEEDS_BI:
        from curindex.scoring.biencoder import get_biencoder

        bi = get_biencoder().encode(anchors.test_texts)  # [n_test, dim]
    side = kind.query_side(ctx, anchors, bi)
    job_list = jobs(specs, n_tune=n_tune, n_test=n_test, objective=objective,
                    budgets=budgets, k_i=k_i)
    plans = [_plan(j, side, bi, live_ids, k_i=k_i, n_items=ctx.load("prepare")["items"])
             for j in job_list]
    # the driver's cores are idle while it solves: every one re-solves weights
    run_plans(plans, retriever, anchor_columns=side.anchor_columns, rcond=side.rcond,
              workers=os.cpu_count() or 1, cos=set(names) == {"h", "bi"}, latent=side.latent)
    if retriever.truth_found is None:  # no plan ran (nothing to retrieve at any budget)
        retriever.retrieve([])
    truth = [keys for keys, _ in retriever.truth_found or []]
    ranking = {"anchor_keys": live_ids, "live": live, "k_i": k_i,
               "n_items": ctx.load("prepare")["items"], "n_anchors_listed": len(live_ids)}
    budgets_of = {t: sorted({f.budget for f in objective}) if t < n_tune else budgets
                  for t in range(n_test)}
    return Searches(job_list, plans, truth, ks, budgets_of, ranking, rows, codecs,
                    not exact_index)


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
    run_plans(again, SparkRetriever(ctx.spark, run.rows, run.codecs), anchor_columns=None,
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


def _method_rows(tab: Table, specs: list[SearchSpec], objective: list[Figure], n_tune: int,
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
                      if (o := tab.objective(s, objective, range(n_tune))) is not None
                      and len(o)]
            best = max(scored, key=lambda x: (x[0], [-c for c in x[1].complexity]))[1] \
                if scored else family[0]
        rows.append({"method": best.method, "rounds": best.rounds,
                     "seed_size": best.seed_size, "recall": tab.mean(best, reporting),
                     "served": best == served})
    return rows


def _log(ctx: BuildContext, served: SearchSpec, reason: str, state: dict,
         failed: list[str]) -> None:
    log.info("served search: %s (%s)", served.describe(), reason)
    base = (state["baseline"] or {}).get("recall", {})
    for figure, value in by_figure(state["recall"]):
        b = base.get(str(figure))
        log.info("%s = %.4f%s", figure.label, value,
                 f" (bi-encoder {b:.4f})" if b is not None else "")
    for failure in failed:
        log.error("quality gate: %s (version %s)", failure, ctx.version)
