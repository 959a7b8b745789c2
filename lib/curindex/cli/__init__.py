"""The `curindex` command (also ``python -m curindex``): build, search, evaluate and manage
versioned index stores.

    curindex build --conf FILE [--master URL] [--version ID] [--publish] [--base V]
        [-- spark-submit options]
    curindex check --conf FILE
    curindex plan --conf FILE [--rate PAIRS_PER_S] [--slots N]
    curindex search [--store URI] [--version V] [--k 10] [--budget N] [--method M] ... QUERY...
    curindex serve [--store URI] [--host H] [--port P] [--poll-s S] ...
    curindex eval|report [--store URI] [--version V] ...
    curindex versions|publish|rollback|prune|verify [--store URI] ...

Conventions (``curindex.cli.options``): ``--store URI`` or ``$CURINDEX_STORE`` on every command
that reads a store; ``--version V`` wherever a version is named; ``-o json`` prints one JSON
document on stdout and nothing else; progress and logs go to stderr; exit codes are
``curindex.cli.exits`` (listed in ``curindex --help``). Each command lives in its own module
with an ``add_commands(sub)``; ``COMMAND_MODULES`` lists them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from curindex import __version__
from curindex.cli import (
    build_cmd,
    check_cmd,
    eval_cmds,
    plan_cmd,
    report_cmd,
    search_cmd,
    serve_cmd,
    store_cmds,
)
from curindex.cli.exits import BROKEN_PIPE, FAILURE, INTERRUPTED, epilog, exit_code
from curindex.cli.output import escaped

# Each adds its subcommands with add_commands(sub); a new command is one more module here.
COMMAND_MODULES = (check_cmd, build_cmd, plan_cmd, search_cmd, serve_cmd, eval_cmds, report_cmd,
                   store_cmds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="curindex", description="Build, search and manage curindex index stores.",
        epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"curindex {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    for sp in sub.choices.values():  # every command's --help lists the exit codes too
        sp.epilog, sp.formatter_class = epilog(), argparse.RawDescriptionHelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (``curindex.cli.exits``). A usage error exits
    through argparse (SystemExit 2)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights are never downloaded at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except Exception as e:
        code = exit_code(e)
        if code == FAILURE:  # not a curindex error: a bug, shown with its traceback
            raise
        print(f"error: {escaped(e)}", file=sys.stderr)  # it may quote what a store holds
        return code


if __name__ == "__main__":
    sys.exit(main())
