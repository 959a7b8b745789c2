"""Factorize stage: gather the anchor items' score rows and pseudo-invert the intersection
matrix into G (leverage anchor items are chosen from the scores first; with ``[factorize]
tune`` the cutoff is chosen on the tuning queries)."""

from __future__ import annotations

import dataclasses
import logging
import time

from curindex.manifest import read_manifest
from curindex.pipeline.context import BuildContext
from curindex.pipeline.factorize import factorize, gather_anchor_rows
from curindex.pipeline.files import npy_bytes
from curindex.pipeline.leverage import leverage_anchor_items
from curindex.pipeline.stages.prepare import write_anchor_tables
from curindex.pipeline.tune import tune_rcond
from curindex.store import FileEntry

log = logging.getLogger("curindex.pipeline")


def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    base = ctx.base()
    if base is not None:  # G, its diagnostics and anchor scores are the base's (prepare)
        fac = read_manifest(ctx.store, base).to_dict()["factorization"]
        return {**fac, "from_base": base}, []
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
    fac = factorize(rows, k_q=ctx.k_q, rcond=rcond, min_rank=cfg.factorize.min_rank)
    log.info("U %dx%d: effective rank %d of %d (rcond %g)", ctx.k_q, len(anchors.item_ids),
             fac.rank, fac.singular_values.size, fac.rcond)
    files += [ctx.store.write_bytes(ctx.version, "G.npy", npy_bytes(fac.g)),
              ctx.store.write_bytes(ctx.version, "anchors/scores.npy", npy_bytes(rows))]
    return {**fac.diagnostics(), **selection, "tuning": tuning}, files
