"""The build job: what spark-submit runs (``curindex build`` submits this file from the
installed package; ``jobs/build_index.py`` is the same entry for a checkout).

    spark-submit [--master URL] .../curindex/pipeline/job.py --conf FILE [--version ID]
        [--publish [--allow-scorer-change]] [--base VERSION] [--stage STAGE] [--summary FILE]

--base VERSION (an id or "current") builds incrementally on that version: its anchors and G are
kept, only new and changed items are scored, and untouched shards are shared with it.
Without --stage every stage runs in this one application (resuming the stages an earlier
attempt at the same --version completed); with it only that stage runs (it needs --version and
the earlier stages' outputs), which is how the Airflow DAG's per-stage layout runs a build.
The JSON summary (a stage's: its version and stage, and after commit the build's summary)
goes to --summary FILE when given, else to stdout; logs go to stderr. A curindex error is
printed as ``error: ...`` and recorded in the summary file as ``{"error": {"class",
"message"}}``, and the job exits with 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from curindex.errors import CurIndexError
from curindex.manifest import Manifest
from curindex.pipeline.run import BuildResult, run_build, run_stage
from curindex.pipeline.stages import STAGES


def summary(result: BuildResult) -> dict[str, Any]:
    """What a finished build reports: version, counts, recall and seconds per stage."""
    m = result.manifest
    if m is None:
        return {"version": result.version, "store": result.store_uri,
                "published": result.published}
    v = m.validation
    return {
        "version": result.version,
        "store": result.store_uri,
        "published": result.published,
        "items": m.counts.items,
        "shards": m.counts.shards,
        "pairs_scored": m.counts.pairs_scored,
        # fewer than pairs_scored when this run resumed an earlier attempt's score chunks
        "pairs_scored_this_run": m.counts.pairs_scored_this_run,
        "effective_rank": m.factorization.effective_rank,
        "incremental": m.to_dict()["incremental"],
        "served": _served(m),
        "recall": dict(v.recall),
        "baseline_recall": dict(v.baseline.recall) if v.baseline else None,
        "quality_gate": "passed" if v.passed else list(v.failures),
        "timings_s": dict(m.timings_s),
        "plan": {"score_seconds": m.plan.score_seconds, "pairs": m.plan.pairs["total"]}
        if m.plan else None,
    }


def _served(m) -> dict[str, Any] | None:
    """The search the version serves, and why."""
    if m.search is None:
        return None
    from curindex.search.methods import SearchSpec

    d = m.search.default
    return {"search": SearchSpec(d.method, d.rounds, d.seed_size).describe(),
            "budget": d.budget,
            "reason": m.search.selection.reason if m.search.selection else None}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build_index.py", description=__doc__.split("\n")[0])
    p.add_argument("--conf", required=True, help="TOML build config")
    p.add_argument("--version", help="version id (default: UTC time + random suffix)")
    p.add_argument("--publish", action="store_true", help="point CURRENT at the new version")
    p.add_argument("--allow-scorer-change", action="store_true",
                   help="with --publish: even when the current version has another scorer")
    p.add_argument("--base", help="build incrementally on this version (an id or 'current'); "
                   "it must have been built with [index] keep_scores = true")
    p.add_argument("--stage", choices=list(STAGES), help="run only this stage (needs --version)")
    p.add_argument("--summary", help="write the JSON summary to this file instead of stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    from curindex.config import load_config
    from curindex.pipeline.spark import session_from_config

    p = parser()
    args = p.parse_args(argv)
    args.base = args.base or None  # "" (the DAG's default) is a full build
    if args.stage and not args.version:
        p.error("--stage needs --version")
    if args.stage and args.publish:
        p.error("--publish goes with a whole build; publish a staged build with `curindex "
                "publish`")
    # force: pyspark may have configured the root logger already.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.conf)
        spark = session_from_config(cfg.spark)
        try:
            if args.stage:
                state = run_stage(spark, cfg, version=args.version, stage=args.stage,
                                  base=args.base)
                # the commit stage's manifest as the build's summary; another stage's state
                # (scores' progress, the plan) stays in the store, out of the task's log
                doc = {"stage": args.stage, **summary(BuildResult(
                    version=args.version, store_uri=cfg.store.uri,
                    manifest=state if isinstance(state, Manifest) else None,
                    published=False))}
            else:
                doc = summary(run_build(spark, cfg, version=args.version,
                                        publish=args.publish, base=args.base,
                                        allow_scorer_change=args.allow_scorer_change))
        finally:
            spark.stop()
    except CurIndexError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.summary:  # which error it was, for `curindex build`'s exit code
            Path(args.summary).write_text(json.dumps(
                {"error": {"class": type(e).__name__, "message": str(e)}}) + "\n",
                encoding="utf-8")
        return 2
    text = json.dumps(doc, indent=2, default=str)
    if args.summary:
        Path(args.summary).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
