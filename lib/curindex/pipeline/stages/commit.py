"""Commit stage: the build report rendered, the manifest written last (the version becomes
complete), the work folder and the stage states removed (by a re-run, or the next prune, when
the build dies in between)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from curindex import __version__
from curindex import manifest as mf
from curindex.errors import StoreError
from curindex.pipeline.anchors import SYNTHETIC_PREFIX
from curindex.pipeline.context import BuildContext
from curindex.pipeline.files import remove_work
from curindex.report import render_report
from curindex.search.shardindex import LABEL_SHIFT
from curindex.store import FileEntry

log = logging.getLogger("curindex.pipeline")

# The stages whose states make up the manifest, in order.
STATE_STAGES = ("prepare", "score", "factorize", "write_shards", "validate")


def run(ctx: BuildContext) -> mf.Manifest:
    cfg = ctx.cfg
    states = {s: ctx.load(s) for s in STATE_STAGES}
    for st in states.values():
        st.pop("config_digest", None)
        st.pop("inputs", None)
    # A file a later stage rewrote (the anchor table, with leverage anchors) counts once.
    files = list({f["path"]: FileEntry(**f)
                  for st in states.values() for f in st.pop("files")}.values())
    timings = {s: st.pop("seconds") for s, st in states.items()}
    prep, score, shards = states["prepare"], states["score"], states["write_shards"]
    anchors = ctx.anchors()
    pooled = (states["validate"].get("pool") or {}).get("pairs", 0)  # validation's own pairs
    sections = dict(
        curindex_version=__version__,
        config=cfg,
        config_source=cfg.source,
        scorer=mf.ScorerInfo(kind=cfg.scorer.kind, fingerprint=prep["fingerprint"]),
        anchors=mf.AnchorsInfo(
            n_queries=len(anchors.query_ids), n_items=len(anchors.item_ids),
            n_test=len(anchors.test_ids), n_tune=ctx.n_tune(), seed=cfg.anchors.seed,
            strategy=cfg.anchors.items, items_file="anchors/items.parquet",
            queries_file="anchors/queries.parquet", scores_file="anchors/scores.npy",
            detached=tuple(prep.get("detached_anchors", []))),
        counts=mf.Counts(
            items=prep["items"], queries_available=prep["queries_available"],
            items_truncated=score["items_truncated"], item_max_chars=prep["item_max_chars"],
            shards=len(shards["shards"]), pairs_scored=score["pairs_scored"] + pooled,
            # less than pairs_scored when the score stage resumed an unfinished attempt
            pairs_scored_this_run=score["pairs_scored_this_run"] + pooled,
            index_pairs=score["index_pairs"], validation_pairs=score["validation_pairs"] + pooled),
        factorization={k: v for k, v in states["factorize"].items() if k != "sparse"},
        index={"factory": cfg.index.factory,
               "dim": (states["factorize"]["sparse"]["dim"] if cfg.index.kind == "sparse"
                       else len(anchors.item_ids)),
               "metric": "inner_product", "label_shift": LABEL_SHIFT, "g_file": "G.npy",
               "shards": shards["shards"], "bytes": shards["bytes"],
               "extra_bytes": shards["extra_bytes"], "extra_layout": shards["extra_layout"]},
        validation={k: v for k, v in states["validate"].items() if k != "search"},
        search=states["validate"]["search"],
        timings_s=timings,
        score_progress=score.pop("progress", []),
        plan=prep.pop("plan", None),
        report_dir="report",
    )
    if cfg.index.kind == "sparse":
        sp = states["factorize"]["sparse"]
        sections["sparse"] = {
            **sp, "training_queries": len(anchors.query_ids),
            "synthetic_queries": sum(i.startswith(SYNTHETIC_PREFIX) for i in anchors.query_ids),
            "neighbours": cfg.sparse.neighbours, "random_items": cfg.sparse.random_items,
            "pairs": score["index_pairs"] if prep["base"] is None else sp["pairs"]}
    if prep["base"] is not None:
        sections["incremental"] = {"base": prep["base"], **score["changes"],
                                   "shards_written": shards["shards_written"],
                                   "shards_shared": shards["shards_shared"]}
    body = mf.body(**sections)
    # The report lives inside the version: immutable and checksummed like the index. It is
    # rendered from the manifest as it will be (every file but the report's own), beside the
    # version published now, which a reviewer compares it with.
    created_at = datetime.now(UTC).isoformat(timespec="microseconds")
    refs = {rel: {"version": holder, **ctx.store.read_manifest(holder)["files"][rel]}
            for rel, holder in shards["references"].items()}
    draft = mf.Manifest.from_dict({
        **body, "version": ctx.version, "created_at": created_at, "references": refs,
        "files": {f.path: {"size": f.size, "sha256": f.sha256} for f in files}})
    previous = _published(ctx)
    files += [ctx.store.write_bytes(ctx.version, f"report/{name}", data)
              for name, data in sorted(render_report(draft, previous=previous).items())]
    doc = ctx.store.commit_version(ctx.version, body, files, references=shards["references"],
                                   created_at=created_at)
    remove_work(ctx.spark, ctx.work)
    ctx.store.forget_build(ctx.version)  # the record too: the folder it names is gone
    return mf.Manifest.from_dict(doc)


def _published(ctx: BuildContext) -> mf.Manifest | None:
    """The version published now, to compare with; None when there is none or it cannot be
    read (the report then says so; a damaged old version must not stop a new one)."""
    try:
        current = ctx.store.current()
        if current is None or current == ctx.version:
            return None
        return mf.read_manifest(ctx.store, current)
    except StoreError as e:
        log.warning("the report compares with no version: the published one cannot be read (%s)",
                    e)
        return None
