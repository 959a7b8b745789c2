"""The `curindex` command: search a published index and manage the store.

    curindex search --store URI [--version V] [--k 10] [--budget 200] [--rounds R]
        [--seed anchors|bi-encoder] "query text" ...
    curindex report|eval --store URI ...
    curindex versions|publish|rollback|prune|verify --store URI ...
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import textwrap

from curindex.errors import CurIndexError


def _excerpt(text: str, width: int) -> str:
    return textwrap.shorten(" ".join(text.split()), width=max(20, width), placeholder="...")


def cmd_search(args: argparse.Namespace) -> int:
    from curindex.search import Searcher

    searcher = Searcher.open(args.store, args.version, scorer_path=args.scorer_path,
                             scorer_target=args.scorer_target,
                             ivf_in_memory=args.ivf_in_memory)
    results = searcher.search(args.queries, k=args.k, budget=args.budget, rounds=args.rounds,
                              seed=args.seed)
    cols = shutil.get_terminal_size((120, 20)).columns
    for r in results:
        print(f"\nquery: {r.query}   (version {searcher.version}, {r.model_calls} model calls)")
        id_w = min(40, max((len(i) for i in r.ids), default=2))
        print(f"  {'#':>3}  {'score':>8}  {'id':<{id_w}}  text")
        for rank, (iid, score, text) in enumerate(zip(r.ids, r.scores, r.texts, strict=True), 1):
            excerpt = _excerpt(text, cols - id_w - 20)
            print(f"  {rank:>3}  {score:>8.4f}  {iid[:id_w]:<{id_w}}  {excerpt}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="curindex", description="Search and manage curindex stores.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="top-k items for each query from a published version")
    s.add_argument("--store", required=True, help="store URI (local path, s3://, hdfs://)")
    s.add_argument("--version", default="current", help="version id (default: current)")
    s.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--budget", type=int, default=200,
                   help="exact-model calls per query, anchor items included (default 200)")
    s.add_argument("--rounds", type=int, default=1,
                   help="adaptive search rounds (> 1 needs a version built with [index] "
                        "adaptive = true; default 1)")
    s.add_argument("--seed", choices=["anchors", "bi-encoder"], default="anchors",
                   help="round 1: the anchor items and CUR candidates (default), or the "
                        "bi-encoder's top items (needs [index] biencoder = true)")
    s.add_argument("--scorer-path", help="where the scorer's model lives on this machine")
    s.add_argument("--scorer-target", metavar="MODULE:CALLABLE",
                   help="allow importing this callable scorer (a version built with kind = "
                        "'callable'); never taken from the store")
    s.add_argument("--ivf-in-memory", action="store_true",
                   help="copy IVF shards into one in-memory index (RAM for every shard's lists; "
                        "the latency of one index) instead of searching them memory-mapped")
    s.add_argument("queries", nargs="+", help="query texts")
    s.set_defaults(func=cmd_search)
    from curindex.cli_eval import add_eval_commands
    from curindex.cli_store import add_store_commands

    add_store_commands(sub)
    add_eval_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CurIndexError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
