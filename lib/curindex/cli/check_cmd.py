"""`curindex check`: the pre-flight check of a build config, without Spark.

    curindex check --conf FILE [--no-scorer] [-o json]

Lists what passed on stdout and every problem on stderr (``error: FILE: [section] key:
...``, once each), and exits 7 when there is one (0 otherwise). With ``-o json`` stdout holds
``{"config", "ok", "problems", "checked", "notes"}`` whatever the verdict. The checks are
``curindex.ops.check``; ``curindex build`` and ``curindex plan`` run the same ones first.
"""

from __future__ import annotations

import argparse
import sys

from curindex.cli.exits import BAD_INPUT, OK
from curindex.cli.options import add_output
from curindex.cli.output import emit_json, safe


def cmd_check(args: argparse.Namespace) -> int:
    from curindex.ops.check import check_build

    report = check_build(args.conf, scorer=not args.no_scorer)
    if args.output == "json":
        emit_json(report.to_dict())
    else:
        for line in report.checked:
            print(f"ok: {safe(line)}")
        for line in report.notes:
            print(f"note: {safe(line)}")
        for line in report.problems:
            print(f"error: {line}", file=sys.stderr)
        if report.ok:
            print(f"{safe(args.conf)}: no problems found")
    return OK if report.ok else BAD_INPUT


def run_check(conf: str, *, what: str) -> None:
    """The check `build` and `plan` run first: CheckError (exit code 7) listing every problem,
    so that nothing starts; a line on stderr when it passes."""
    from curindex.cli.output import timed
    from curindex.ops.check import check_build

    with timed(f"checking {conf} before {what}", done="checked"):
        report = check_build(conf)
    report.raise_for_problems()


def add_commands(sub: argparse._SubParsersAction) -> None:
    text = "check a build config, its inputs, scorer and store, without Spark"
    p = sub.add_parser("check", help=text, description=text)
    p.add_argument("--conf", required=True, metavar="FILE", help="the build config (TOML)")
    p.add_argument("--no-scorer", action="store_true",
                   help="do not load the model and score a pair (its files are still read)")
    add_output(p)
    p.set_defaults(func=cmd_check)
