"""Prepare stage: check the inputs and choose the anchors (or take an incremental build's base's
anchors and G)."""

from __future__ import annotations

import logging

from curindex.config import validation_queries
from curindex.errors import ConfigError
from curindex.manifest import read_manifest
from curindex.ops.plan import needs_biencoder, plan_build, plan_dict, rate_from_history
from curindex.pipeline import incremental
from curindex.pipeline.anchors import write_anchor_tables
from curindex.pipeline.context import BuildContext
from curindex.pipeline.corpus import check_texts, read_texts
from curindex.pipeline.files import remove_work
from curindex.pipeline.kinds import kind_for
from curindex.quality.pooling import resolve_truth
from curindex.search.shardindex import empty_index
from curindex.store import FileEntry

log = logging.getLogger("curindex.pipeline")

def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    cfg, store = ctx.cfg, ctx.store
    empty_index(cfg.index.factory, cfg.anchors.n_items)  # a bad factory string fails first
    fingerprint = ctx.inputs["scorer"]
    base = ctx.base_arg
    if base is not None:  # a base this config cannot extend fails first
        manifest = read_manifest(store, base)
        incremental.check_base(cfg, base, manifest)
        if manifest.scorer.fingerprint != fingerprint:
            raise ConfigError(
                f"--base {base}: the scorer here has fingerprint {fingerprint}, the base "
                f"was built with {manifest.scorer.fingerprint}")
    store.begin_version(ctx.version)  # clears leftovers of an earlier attempt
    ctx.clear_states()
    remove_work(ctx.spark, ctx.work)  # new anchors or items: no score chunk is kept
    items = read_texts(ctx.spark, cfg.items, role="items")
    queries = read_texts(ctx.spark, cfg.queries, role="queries")
    item_stats = check_texts(items, role="items", source=cfg.items.path)
    query_stats = check_texts(queries, role="queries", source=cfg.queries.path)
    plan = plan_build(cfg, n_items=item_stats.rows, n_queries=query_stats.rows,
                      slots=ctx.spark.sparkContext.defaultParallelism,
                      history=rate_from_history(store.versions_listing()[0],
                                                fingerprint=fingerprint,
                                                bi=needs_biencoder(cfg),
                                                n_q=cfg.anchors.n_queries
                                                + validation_queries(cfg)))
    for line in plan.lines():
        log.info("%s", line)
    truth, why = resolve_truth(cfg.validate.ground_truth, n_test=validation_queries(cfg),
                               n_items=item_stats.rows, index_pairs=plan.pairs["index"])
    if base is not None:  # the base's rows hold its test scores or none: the same truth
        truth, why = manifest.validation.ground_truth, f"as the base version {base}"
    if truth == "pooled" and cfg.factorize.tune:
        raise ConfigError(f"{cfg.source}: [factorize] tune: chooses the cutoff on the test "
                          "queries' exact scores against every item, which pooled validation "
                          f"does not compute ({why}); set [validate] ground_truth = \"exact\"")
    log.info("validation's truth: %s (%s)", truth, why)
    state = {"fingerprint": fingerprint, "items": item_stats.rows, "plan": plan_dict(plan),
             "ground_truth": {"kind": truth, "why": why},
             "queries_available": query_stats.rows, "item_max_chars": item_stats.max_chars,
             "item_mean_chars": round(item_stats.mean_chars, 1), "base": None,
             "detached_anchors": []}
    kind = kind_for(cfg)
    if base is None:
        anchors = kind.choose(ctx, items, queries, item_stats.rows, query_stats.rows)
        return state, write_anchor_tables(store, ctx.version, anchors)
    anchor_items = ctx.table("anchors/items.parquet", version=base)
    detached = incremental.detached_anchors(items, anchor_items.column("id").to_pylist(),
                                            anchor_items.column("text").to_pylist())
    if detached:
        log.warning("--base %s: %d anchor items were deleted or changed in the corpus (%s); "
                    "they stay anchors (their stored texts) but leave search results",
                    base, len(detached), ", ".join(detached[:5]))
    # The small files that define the projection are copied; shards are referenced.
    files = [store.write_bytes(ctx.version, rel, store.read_bytes(base, rel))
             for rel in kind.DEFINING_FILES]
    return {**state, "base": base, "detached_anchors": detached}, files
