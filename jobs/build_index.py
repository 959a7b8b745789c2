"""spark-submit entry point: build one curindex version, and publish it with --publish.

    spark-submit [--master URL] jobs/build_index.py --conf FILE [--version ID] [--publish]
        [--base VERSION] [--stage prepare|score|factorize|write_shards|validate|commit]

--base VERSION (an id or "current") builds incrementally on that version: its anchors and G are
kept, only new and changed items are scored, and untouched shards are shared with it.
Without --stage every stage runs in this one application; with it only that stage runs (it
needs --version and the earlier stages' outputs), which is how the Airflow DAG runs a build.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from curindex import CurIndexError
from curindex.build import STAGES, run_build, run_stage
from curindex.config import load_config
from curindex.spark import session_from_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="build_index.py", description=__doc__.split("\n")[0])
    p.add_argument("--conf", required=True, help="TOML build config")
    p.add_argument("--version", help="version id (default: UTC time + random suffix)")
    p.add_argument("--publish", action="store_true", help="point CURRENT at the new version")
    p.add_argument("--base", help="build incrementally on this version (an id or 'current'); "
                   "it must have been built with [index] keep_scores = true")
    p.add_argument("--stage", choices=STAGES, help="run only this stage (needs --version)")
    args = p.parse_args(argv)
    args.base = args.base or None  # "" (the DAG's default) is a full build
    if args.stage and not args.version:
        p.error("--stage needs --version")
    if args.stage and args.publish:
        p.error("--publish goes with a whole build; publish a staged build with `curindex "
                "publish`")
    # force: pyspark may have configured the root logger already. (Under spark-submit the
    # JVM merges the driver's stderr into its stdout.)
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
                print(json.dumps({"version": args.version, "stage": args.stage,
                                  "state": state}, indent=2, default=str))
                return 0
            result = run_build(spark, cfg, version=args.version, publish=args.publish,
                               base=args.base)
        finally:
            spark.stop()
    except CurIndexError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.manifest
    print(json.dumps({
        "version": result.version,
        "store": result.store_uri,
        "published": result.published,
        "items": m["counts"]["items"],
        "shards": m["counts"]["shards"],
        "pairs_scored": m["counts"].get("pairs_scored"),
        # fewer than pairs_scored when this run resumed an earlier attempt's score chunks
        "pairs_scored_this_run": m["counts"].get("pairs_scored_this_run"),
        "effective_rank": m["factorization"]["effective_rank"],
        "incremental": m.get("incremental"),
        "recall": m["validation"]["recall"],
        "baseline_recall": (m["validation"]["baseline"] or {}).get("recall"),
        "quality_gate": "passed" if m["validation"]["passed"] else m["validation"]["failures"],
        "timings_s": m["timings_s"],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
