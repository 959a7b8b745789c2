"""`curindex serve`: answer searches over HTTP from a store's published version, following its
publishes.

    curindex serve [--store URI] [--host 127.0.0.1] [--port 8080] [--poll-s 5]
        [--max-budget N] [--max-batch-queries 64] [--scorer-path P] [--scorer-target M:C]

The model stays loaded between requests; concurrent requests are batched; CURRENT is polled
every ``--poll-s`` seconds (and read on ``POST /refresh``). The endpoints: ``curindex.serve.app``.
"""

from __future__ import annotations

import argparse
import logging

from curindex.cli.options import add_store, positive_int
from curindex.errors import CurIndexError


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise CurIndexError(f"curindex serve needs the serve extra: pip install "
                            f"'curindex[serve]' ({e})") from e
    from curindex.cli.search_cmd import open_searcher
    from curindex.serve import run

    logging.getLogger("curindex").setLevel(logging.INFO)  # which version serves, and refreshes
    with open_searcher(args, "current") as searcher:
        logging.getLogger("curindex.serve").info("serving %r on http://%s:%d", searcher,
                                                 args.host, args.port)
        run(searcher, host=args.host, port=args.port, poll_s=args.poll_s or None,
            max_batch_queries=args.max_batch_queries, log_level=args.log_level)
    return 0


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_commands(sub: argparse._SubParsersAction) -> None:
    text = "answer searches over HTTP from the published version, following publishes"
    s = sub.add_parser("serve", help=text, description=text)
    add_store(s)
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    s.add_argument("--port", type=positive_int, default=8080, help="port (default 8080)")
    s.add_argument("--poll-s", type=non_negative_float, default=5.0,
                   help="seconds between reads of the store's CURRENT (default 5; 0: only on "
                        "POST /refresh)")
    s.add_argument("--max-budget", type=positive_int, default=None,
                   help="refuse budgets above this (default 10000)")
    s.add_argument("--max-batch-queries", type=positive_int, default=64,
                   help="queries of concurrent requests searched together at most (default 64)")
    s.add_argument("--scorer-path", help="where the scorer's model lives on this machine (a "
                                         "folder or a Hugging Face model id)")
    s.add_argument("--scorer-target", metavar="MODULE:CALLABLE",
                   help="allow importing this callable scorer (a version built with kind = "
                        "'callable'); never taken from the store")
    s.add_argument("--ivf-in-memory", action="store_true",
                   help="copy IVF shards into one in-memory index (see curindex search)")
    s.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default info: one access line per request)")
    s.set_defaults(func=cmd_serve)
