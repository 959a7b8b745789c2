"""`curindex plan`: what a build of a config will score, write and take, before it runs.

    curindex plan --conf FILE [--rate PAIRS_PER_S | --sample] [--slots N] [-o json]

The exact-model pairs (a dense build: anchor and test queries against every item; a sparse
build: training queries against their few items, test queries against every item), the bytes
of the index files and score rows, and the score stage's time: from ``--rate`` (the score
stage's pairs per second), else from the config's store's last full build with the same
scorer, else measured on a short scoring sample here, on one thread per task slot. The other
build kind's cost of the same config is printed beside it. Every build logs the same lines
at its start and records the plan in its manifest beside what it then counted and timed. The
config is checked first (``curindex check``): a config the build would reject gets no plan.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from curindex.cli.options import add_output, positive_int
from curindex.cli.output import emit_json, timed

log = logging.getLogger("curindex.cli")


def cmd_plan(args: argparse.Namespace) -> int:
    from curindex.cli.check_cmd import run_check
    from curindex.config import load_config
    from curindex.ops.plan import other_kind, plan_build, plan_dict

    run_check(args.conf, what="planning")  # a plan of a build that cannot run is no plan
    cfg = load_config(args.conf)
    history = None if args.rate or args.sample else _history(cfg)
    with timed("counting the inputs" if args.rate or history else "measuring a scoring sample"):
        plan = plan_build(cfg, rate=args.rate, slots=args.slots, history=history)
        # The other build kind of the same config, beside it: what each costs.
        other = plan_build(other_kind(cfg), rate=args.rate, slots=args.slots,
                           n_items=plan.items)
    if args.output == "json":
        emit_json({**plan_dict(plan), "other_kind": plan_dict(other)})
    else:
        print("\n".join(plan.lines()))
        print(f"other kind ([index] kind = \"{other.kind}\"), for comparison:")
        print("\n".join("  " + line for line in other.lines()))
        print(_side_by_side(plan, other))
    return 0


def _side_by_side(*plans: Any) -> str:
    """Both kinds' exact-model pairs per item and score-stage time, one line each."""
    rows = [f"{p.kind:>6}: index {p.pairs['index'] / max(1, p.items):.3g} pairs per item, "
            f"validation {p.pairs['test'] / max(1, p.items):.3g}, {p.pairs['total']:,} pairs, "
            f"score stage about {p.score_seconds:,.0f} s" for p in plans]
    return "\n".join(["exact-model cost by build kind:", *rows])


def _history(cfg: Any) -> Any:
    """The rate of the config's store's newest full build with the same scorer, if any."""
    from curindex.config import validation_queries
    from curindex.errors import StoreError
    from curindex.ops.plan import needs_biencoder, rate_from_history
    from curindex.scoring.base import fingerprint_for
    from curindex.store import Store

    try:
        listing = Store.open(cfg.store.uri).versions_listing()[0]
    except StoreError as e:  # missing or unreadable: the plan measures a sample instead
        log.info("store %s: %s; measuring a sample", cfg.store.uri, e)
        return None
    return rate_from_history(listing, fingerprint=fingerprint_for(cfg.scorer),
                             bi=needs_biencoder(cfg),
                             n_q=cfg.anchors.n_queries + validation_queries(cfg))


def add_commands(sub: argparse._SubParsersAction) -> None:
    text = "print what a build of a config will score, write and take"
    p = sub.add_parser("plan", help=text, description=text)
    p.add_argument("--conf", required=True, metavar="FILE", help="the build config (TOML)")
    p.add_argument("--rate", type=float, default=None, metavar="PAIRS_PER_S",
                   help="the score stage's pairs per second (default: the store's last "
                   "full build with this scorer, else measured on a sample)")
    p.add_argument("--sample", action="store_true",
                   help="measure a scoring sample even when the store has an earlier build")
    p.add_argument("--slots", type=positive_int, default=None, metavar="N",
                   help="tasks that run at once (default: the config's master or executors)")
    add_output(p)
    p.set_defaults(func=cmd_plan)
