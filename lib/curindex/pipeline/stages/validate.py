"""Validate stage: Top-k-Recall@budget of the built index on the reported test queries,
distributed (``pipeline.validate``), and the quality gate's verdict."""

from __future__ import annotations

import logging

import numpy as np

from curindex.figures import Figure, by_figure, figure_grid
from curindex.gate import gate_failures
from curindex.pipeline.anchors import Anchors
from curindex.pipeline.context import BuildContext
from curindex.pipeline.validate import (
    baseline_recall,
    candidate_overlap,
    index_candidates,
    recall_with_candidates,
    shortlists,
)
from curindex.shardindex import is_exact
from curindex.store import FileEntry

log = logging.getLogger("curindex.pipeline")


def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    v, k_q, cfg = ctx.cfg.validate, ctx.k_q, ctx.cfg
    anchors, n_items = ctx.anchors(), ctx.load("prepare")["items"]
    k_i = len(anchors.item_ids)
    # A budget that reaches the whole corpus measures nothing.
    budgets = [b for b in v.budgets if b < n_items]
    figures = figure_grid(v.ks, budgets, min_budget=k_i)
    first = k_q + ctx.n_tune()  # the tuning queries come first and are not reported
    c = ctx.npy("anchors/scores.npy")[:, first:]  # [k_i, n_test]: the test queries' vectors
    state: dict = {"n_test": c.shape[1], "min_recall": dict(v.min_recall), "recall": {},
                   "recall_exact_search": {}, "index_recall_vs_exact": {}, "baseline": None}
    if c.shape[1] and figures:
        state.update(_measure(ctx, anchors, c, first, budgets, figures))
    failed = gate_failures(state["recall"], v.min_recall)
    for figure, value in by_figure(state["recall"]):
        base = (state["baseline"] or {}).get("recall", {}).get(str(figure))
        log.info("%s = %.4f%s", figure.label, value,
                 f" (bi-encoder {base:.4f})" if base is not None else "")
    for failure in failed:
        log.error("quality gate: %s (version %s)", failure, ctx.version)
    state.update(passed=not failed, failures=failed, index=cfg.index.factory)
    return state, []


def _measure(ctx: BuildContext, anchors: Anchors, c: np.ndarray, first: int,
             budgets: list[int], figures: list[Figure]) -> dict:
    """Recall of the reported test queries: score columns `first ..`, vectors `c`."""
    cfg, k_i, spark = ctx.cfg, len(anchors.item_ids), ctx.spark
    m_max = max(f.budget for f in figures) - k_i
    # Detached anchors (incremental builds) still cost a call each, but are no results.
    detached = set(ctx.load("prepare").get("detached_anchors", []))
    live = [j for j, a in enumerate(anchors.item_ids) if a not in detached]
    live_ids, live_c, extra = [anchors.item_ids[j] for j in live], c[live], k_i - len(live)
    bi_queries = None
    if cfg.validate.baseline == "bi-encoder":
        from curindex.baseline import get_biencoder

        bi_queries = get_biencoder().encode(anchors.test_texts[first - ctx.k_q:])
    spark.sparkContext.setJobDescription("curindex: validate recall")
    try:
        lists = shortlists(spark, ctx.scores(), g=ctx.npy("G.npy"), c=c, anchor_ids=live_ids,
                           k_q=ctx.k_q, k_max=max(f.k for f in figures), m_max=m_max,
                           bi_queries=bi_queries, b_max=max(budgets), first=first)
        exact_search = recall_with_candidates(lists, lists.cand, live_ids, live_c, figures,
                                              extra)
        if is_exact(cfg.index.factory, k_i):
            recall, overlap = exact_search, {str(b): 1.0 for b in budgets if b > k_i}
        else:
            cand = index_candidates(
                spark, ctx.scores(), read_shard=ctx.read_shard_file,
                shards=ctx.load("write_shards")["shards"], c=c, k_q=ctx.k_q,
                anchor_ids=live_ids, m_max=m_max, nprobe=cfg.index.nprobe,
                ef_search=cfg.index.ef_search, first=first)
            recall = recall_with_candidates(lists, cand, live_ids, live_c, figures, extra)
            overlap = {str(b): candidate_overlap(cand, lists.cand, b - k_i)
                       for b in budgets if b > k_i}
    finally:
        spark.sparkContext.setJobDescription(None)
    baseline = None
    if bi_queries is not None:
        baseline = {"name": "bi-encoder", "recall": baseline_recall(lists, figures)}
    return {"recall": recall, "recall_exact_search": exact_search,
            "index_recall_vs_exact": overlap, "baseline": baseline}
