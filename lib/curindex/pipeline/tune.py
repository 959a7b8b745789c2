"""Tuned inversion (``[factorize] tune``): the cutoff of ``pinv(U)`` chosen from a grid by the
mean Top-k-Recall@budget on the tuning queries (the first ``n_tune`` test queries, never
reported), one distributed shortlist pass per candidate."""

from __future__ import annotations

import logging

import numpy as np

from curindex.errors import ConfigError, CurIndexError
from curindex.pipeline.anchors import Anchors
from curindex.pipeline.context import BuildContext
from curindex.pipeline.factorize import factorize
from curindex.pipeline.shortlists import recall_with_candidates, shortlists
from curindex.quality.figures import figure_grid

log = logging.getLogger("curindex.pipeline")


def tune_rcond(ctx: BuildContext, rows: np.ndarray, anchors: Anchors) -> dict:
    """The tuning record: objective, the tuning queries, the recall curve and the choice.
    rows: [k_i, k_q + n_test] the anchor items' score rows."""
    cfg, k_q, n_tune = ctx.cfg, ctx.k_q, ctx.n_tune()
    v, k_i = cfg.validate, len(anchors.item_ids)
    budgets = [b for b in v.budgets if b < ctx.load("prepare")["items"]]
    figures = figure_grid(v.ks, budgets, min_budget=k_i)
    if not figures:
        raise ConfigError(f"{cfg.source}: [factorize] tune: no Top-k-Recall@budget figure to "
                          f"tune on ([validate] ks {v.ks}, budgets {v.budgets}, k_i {k_i})")
    c = rows[:, k_q : k_q + n_tune]  # [k_i, n_tune]
    curve: dict[str, float | None] = {}
    for rcond in cfg.factorize.tune_rconds:
        try:
            g = factorize(rows, k_q=k_q, rcond=rcond, min_rank=cfg.factorize.min_rank).g
        except CurIndexError:  # too few directions left at this cutoff
            curve[repr(rcond)] = None
            continue
        lists = shortlists(ctx.spark, ctx.scores(), g=g, c=c, anchor_ids=anchors.item_ids,
                           k_q=k_q, k_max=max(f.k for f in figures),
                           m_max=max(f.budget for f in figures) - k_i, first=k_q)
        recall = recall_with_candidates(lists, lists.cand, anchors.item_ids, c, figures)
        curve[repr(rcond)] = float(np.mean(list(recall.values())))
        log.info("tuning: rcond %g: mean recall %.4f on %d tuning queries", rcond,
                 curve[repr(rcond)], n_tune)
    scored = [(value, -i) for i, value in enumerate(curve.values()) if value is not None]
    if not scored:
        raise CurIndexError(f"version {ctx.version}: no rcond in [factorize] tune_rconds "
                            "leaves min_rank singular values")
    best = -max(scored)[1]  # best mean recall; the first in grid order on a tie
    return {"objective": "mean of " + ", ".join(str(f) for f in figures),
            "n_tune": n_tune, "tune_ids": anchors.test_ids[:n_tune],
            "curve": curve, "chosen_rcond": cfg.factorize.tune_rconds[best]}
