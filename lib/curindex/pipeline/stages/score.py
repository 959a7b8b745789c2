"""Score stage: every anchor and test query against every item (an incremental build: only the
new and changed items), committed in chunks so a killed driver resumes (``pipeline.score``)."""

from __future__ import annotations

import logging

from curindex.errors import CurIndexError
from curindex.kinds import scorerows
from curindex.pipeline import incremental
from curindex.pipeline.context import BuildContext
from curindex.pipeline.corpus import read_texts
from curindex.pipeline.kinds import kind_for
from curindex.pipeline.score import score_items, shard_of
from curindex.pipeline.stages.write_shards import extras
from curindex.scoring.biencoder import biencoder_fingerprint
from curindex.store import FileEntry

log = logging.getLogger("curindex.pipeline")


def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    prep, anchors, cfg, spark = ctx.load("prepare"), ctx.anchors(), ctx.cfg, ctx.spark
    items = read_texts(spark, cfg.items, role="items")
    changes, scored = None, prep["items"]
    if prep["base"] is not None:
        keys = ctx.base_rows(prep["base"], keys_only=True)
        changes = incremental.changes(items, keys, shard_of("id", cfg.index.num_shards))
        items = incremental.items_to_score(items, keys)
        if changes["new"] + changes["changed"] + changes["unchanged"] != prep["items"]:
            raise CurIndexError(f"version {ctx.version}: {changes} do not add up to the "
                                f"{prep['items']} items of the corpus")
        log.info("incremental build on %s: %d new, %d changed, %d deleted, %d unchanged "
                 "items; %d of %d shards touched", prep["base"], changes["new"],
                 changes["changed"], changes["deleted"], changes["unchanged"],
                 len(changes["touched_shards"]), cfg.index.num_shards)
        scored = changes["new"] + changes["changed"]
    if prep["fingerprint"] != ctx.inputs["scorer"]:
        raise CurIndexError(
            f"version {ctx.version}: the scorer's fingerprint is {ctx.inputs['scorer']} now, "
            f"{prep['fingerprint']} when the prepare stage ran: run prepare again (a whole "
            "build does so by itself)")
    kind = kind_for(cfg)
    partitions = cfg.spark.score_partitions or 4 * spark.sparkContext.defaultParallelism
    queries = kind.scored_queries(ctx, anchors)  # every item's score row
    n_q = len(queries)
    n_test = len(anchors.test_ids) if ctx.exact_truth() else 0  # of them, test queries
    kwargs = dict(queries=queries, scorer_cfg=cfg.scorer,
                  fingerprint=prep["fingerprint"], num_shards=cfg.index.num_shards,
                  partitions=partitions, block_items=cfg.spark.block_items,
                  out_path=f"{ctx.work}/scores", n_items=scored, stamp=ctx.inputs,
                  biencoder=biencoder_fingerprint() if kind.NEEDS_BI or "bi" in extras(cfg)
                  else None)
    # Chunks an unfinished attempt committed are kept; a stage that completed before and
    # runs again (run_stage) starts over.
    done = score_items(spark, items, resume=ctx.store.load_build_state(ctx.version, "score")
                       is None, **kwargs)
    stale = ctx.stale_chunks()
    if stale:  # committed by a task with another scorer or from other inputs: scored again
        log.warning("score: %d chunks were scored with another %s; scoring them again",
                    len(stale), " and ".join(sorted({k for v in stale.values() for k in v})))
        ctx.drop_chunks(stale)
        done = score_items(spark, items, resume=True, **kwargs)
        ctx.check_chunks()
    # An incremental build checks the rows it scored; the base's are counted by changes().
    chunks = spark.read.schema(scorerows.SPARK_SCHEMA).parquet(f"{ctx.work}/scores")
    n = chunks.count()
    if n != scored:
        raise CurIndexError(f"version {ctx.version}: the score chunks hold {n} items, "
                            f"{scored} were to be scored")
    truncated = chunks.where("truncated").count()
    if changes is not None:
        truncated += changes.pop("unchanged_truncated")
    more = kind.score_more(ctx)  # the sparse build's pairs
    index = more.pop("index_pairs", scored * (n_q - n_test))
    index_run = more.pop("index_pairs_this_run", done.items_scored * (n_q - n_test))
    return {"pairs_scored": scored * n_test + index, "changes": changes,
            "pairs_scored_this_run": done.items_scored * n_test + index_run,
            "index_pairs": index, "validation_pairs": scored * n_test, **more,
            "chunks": done.n_chunks, "chunks_resumed": done.chunks_resumed,
            "items_truncated": truncated,
            "progress": [{"seconds": t, "items": n} for t, n in done.progress]}, []
