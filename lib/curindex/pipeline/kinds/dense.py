"""The dense (CUR) build kind, Spark side: k_q anchor queries and n_test test queries scored
against every item, anchor items chosen (randomly, by k-means, or by leverage from the
scores), ``G = pinv(U)`` from the anchor items' rows (``curindex.pipeline.factorize``)."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from pyspark.sql import DataFrame

from curindex.config import synthetic_tests
from curindex.kinds.dense import DenseFeatures
from curindex.pipeline.anchors import Anchors, choose_anchors, write_anchor_tables
from curindex.pipeline.context import BuildContext
from curindex.pipeline.factorize import factorize as solve
from curindex.pipeline.factorize import gather_anchor_rows
from curindex.pipeline.files import npy_bytes
from curindex.pipeline.kinds.base import QuerySide
from curindex.pipeline.leverage import leverage_anchor_items
from curindex.pipeline.tune import tune_rcond
from curindex.store import FileEntry

log = logging.getLogger("curindex.pipeline")

# every item's bi-encoder embedding is part of its score row (the features of a sparse
# item; a dense one's only when its search methods need it)
NEEDS_BI = False

# The small files that define the projection: an incremental build copies them from its base.
DEFINING_FILES = ("anchors/items.parquet", "anchors/queries.parquet", "G.npy",
                  "anchors/scores.npy")


def choose(ctx: BuildContext, items: DataFrame, queries: DataFrame, n_items: int,
           n_queries: int) -> Anchors:
    return choose_anchors(items, queries, ctx.cfg.anchors, n_items=n_items, n_queries=n_queries,
                          synthetic_tests=synthetic_tests(ctx.cfg))


def scored_queries(ctx: BuildContext, anchors: Anchors) -> list[str]:
    """Anchor queries first, then (exact validation) test queries: every item's score row."""
    return anchors.query_texts + (anchors.test_texts if ctx.exact_truth() else [])


def test_column(ctx: BuildContext) -> int | None:
    """The score-row column of test query 0 (None: the rows hold no test score)."""
    return ctx.k_q if ctx.exact_truth() else None


def score_more(ctx: BuildContext) -> dict:
    return {}


def factorize(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    ctx.check_chunks()
    cfg, anchors, files, selection = ctx.cfg, ctx.anchors(), [], {}
    if cfg.anchors.items == "leverage":  # anchor items from the scores, first
        t0 = time.perf_counter()
        ids, texts = leverage_anchor_items(ctx.scores(), k_q=ctx.k_q, k_i=cfg.anchors.n_items)
        anchors = dataclasses.replace(anchors, item_ids=ids, item_texts=texts)
        files = write_anchor_tables(ctx.store, ctx.version, anchors)
        selection = {"anchor_selection_s": round(time.perf_counter() - t0, 3)}
    rows = gather_anchor_rows(ctx.scores(), anchors.item_ids)  # [k_i, k_q + n_test]
    rcond, tuning = cfg.factorize.rcond, None
    if cfg.factorize.tune:
        tuning = tune_rcond(ctx, rows, anchors)
        rcond = tuning["chosen_rcond"]
    fac = solve(rows, k_q=ctx.k_q, rcond=rcond, min_rank=cfg.factorize.min_rank)
    log.info("U %dx%d: effective rank %d of %d (rcond %g)", ctx.k_q, len(anchors.item_ids),
             fac.rank, fac.singular_values.size, fac.rcond)
    files += [ctx.store.write_bytes(ctx.version, "G.npy", npy_bytes(fac.g)),
              ctx.store.write_bytes(ctx.version, "anchors/scores.npy", npy_bytes(rows))]
    return {**fac.diagnostics(), **selection, "tuning": tuning}, files


def features(ctx: BuildContext) -> DenseFeatures:
    return DenseFeatures(g=ctx.npy("G.npy"), k_q=ctx.k_q)


def query_side(ctx: BuildContext, anchors: Anchors, bi_test: np.ndarray | None,
               pairs=None) -> QuerySide:
    """The test queries' exact scores on the anchor items: from the anchor items' score rows,
    or (pooled validation, `pairs`: its ``PairScores``) scored now."""
    scores = ctx.npy("anchors/scores.npy")  # [k_i, k_q (+ n_test)]
    if pairs is None:
        exact = scores[:, ctx.k_q:].T  # [n_test, k_i]
    else:
        n, k_i = len(anchors.test_ids), len(anchors.item_ids)
        exact = pairs.get([(t, a) for t in range(n) for a in anchors.item_ids]).reshape(n, k_i)
    return QuerySide(anchor_exact=exact,
                     anchor_columns=scores[:, :ctx.k_q].T.astype(np.float64), priors=None,
                     latent=None, rcond=ctx.load("factorize")["rcond"])
