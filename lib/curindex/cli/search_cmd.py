"""`curindex search`: the top items of a version for each query, and which search answered.

    curindex search [--store URI] [--version V] [--k 10] [--budget N]
        [--method cur|adaptive|bi-seeded|bi-rerank] [--rounds R] [--seed anchors|bi-encoder]
        [--seed-size N] [--max-budget N] [--queries FILE] [-o json] "query text" ...

Without method options the version's served search answers (the method, rounds, seed and
budget its build chose); each option overrides one part of it.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from curindex.cli.options import (
    add_output,
    add_store,
    add_version,
    positive_int,
    read_queries,
    version_of,
)
from curindex.cli.output import emit_json, excerpt, progress, safe, table, timed

if TYPE_CHECKING:
    from curindex.search import Searcher, SearchResult

METHOD_CHOICES = ("cur", "adaptive", "bi-seeded", "bi-rerank")
SEED_CHOICES = ("anchors", "bi-encoder")
BATCH = 100  # queries per Searcher.search call: a progress line after each when there are more


def open_searcher(args: argparse.Namespace, version: str) -> Searcher:
    """The Searcher of `version`, with progress on stderr while it verifies and loads."""
    from curindex.search import DEFAULT_MAX_BUDGET, Searcher

    with timed(f"loading version {safe(version)} of {safe(args.store)} and its scorer",
               done="loaded"):
        searcher = Searcher.open(
            args.store, version, scorer_path=getattr(args, "scorer_path", None),
            scorer_target=getattr(args, "scorer_target", None),
            ivf_in_memory=getattr(args, "ivf_in_memory", False),
            max_budget=getattr(args, "max_budget", None) or DEFAULT_MAX_BUDGET)
    return searcher


def search_in_batches(searcher: Searcher, queries: Sequence[str], **how: Any
                      ) -> list[SearchResult]:
    """`searcher.search` over every query, BATCH at a time, with progress on stderr."""
    out: list[SearchResult] = []
    for start in range(0, len(queries), BATCH):
        out += searcher.search(list(queries[start:start + BATCH]), **how)
        if len(queries) > BATCH:
            progress(f"searched {len(out)}/{len(queries)} queries")
    return out


def served_doc(searcher: Searcher) -> dict[str, Any]:
    s = searcher.served
    return {"method": s.method, "rounds": s.rounds, "seed": s.seed, "seed_size": s.seed_size,
            "budget": s.budget}


def cmd_search(args: argparse.Namespace) -> int:
    queries = list(args.queries) + (read_queries(args.queries_file) if args.queries_file else [])
    if not queries:
        raise ValueError("no queries: give query texts or --queries FILE")
    searcher = open_searcher(args, version_of(args))
    results = search_in_batches(searcher, queries, k=args.k, budget=args.budget,
                                method=args.method, rounds=args.rounds, seed=args.seed,
                                seed_size=args.seed_size)
    if args.output == "json":
        emit_json({"store": searcher.store.uri if searcher.store else args.store,
                   "version": searcher.version, "served": served_doc(searcher),
                   "results": [result_doc(r) for r in results]})
        return 0
    cols = shutil.get_terminal_size((120, 20)).columns
    for r in results:
        print(f"\nquery: {safe(r.query)}   (version {safe(searcher.version)}, "
              f"{r.method or 'search'}, {r.model_calls} model calls)")
        ids = [safe(i) for i in r.ids]
        id_w = min(40, max((len(i) for i in ids), default=2))
        rows = [["#", "score", "id", "text"]]
        rows += [[str(rank), f"{score:.4f}", iid[:id_w], excerpt(text, cols - id_w - 20)]
                 for rank, (iid, score, text) in enumerate(zip(ids, r.scores, r.texts,
                                                               strict=True), 1)]
        for line in table(rows, right=(0, 1)):
            print("  " + line)
    return 0


def result_doc(r: SearchResult) -> dict[str, Any]:
    return {"query": r.query, "method": r.method, "model_calls": r.model_calls,
            "items": [{"rank": rank, "id": iid, "score": float(score), "text": text}
                      for rank, (iid, score, text) in enumerate(zip(r.ids, r.scores, r.texts,
                                                                    strict=True), 1)]}


def add_method_options(p: argparse.ArgumentParser) -> None:
    """--method, --rounds, --seed, --seed-size: a search other than the served one."""
    p.add_argument("--method", choices=METHOD_CHOICES,
                   help="the search method (default: the version's served search); methods "
                        "other than cur need the version's extra indexes ([index] methods)")
    p.add_argument("--rounds", type=positive_int,
                   help="rounds of adaptive / bi-seeded search (with --seed: > 1 is adaptive)")
    p.add_argument("--seed", choices=SEED_CHOICES,
                   help="round 1 from the anchor items (plain CUR, adaptive) or the "
                        "bi-encoder's top items (bi-rerank, bi-seeded)")
    p.add_argument("--seed-size", type=positive_int,
                   help="items the bi-encoder seeds round 1 with (bi-seeded)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    text = "top-k items for each query from a version (the published one by default)"
    s = sub.add_parser("search", help=text, description=text)
    add_store(s)
    add_version(s)
    s.add_argument("--k", type=positive_int, default=10, help="results per query (default 10)")
    s.add_argument("--budget", type=positive_int, default=None,
                   help="exact-model calls per query, anchor items included (default: the "
                        "version's served budget)")
    add_method_options(s)
    s.add_argument("--max-budget", type=positive_int, default=None,
                   help="refuse budgets above this (default 10000)")
    s.add_argument("--scorer-path", help="where the scorer's model lives on this machine (a "
                                         "folder or a Hugging Face model id)")
    s.add_argument("--scorer-target", metavar="MODULE:CALLABLE",
                   help="allow importing this callable scorer (a version built with kind = "
                        "'callable'); never taken from the store")
    s.add_argument("--ivf-in-memory", action="store_true",
                   help="copy IVF shards into one in-memory index (RAM for every shard's lists; "
                        "the latency of one index) instead of searching them memory-mapped")
    s.add_argument("--queries", dest="queries_file", metavar="FILE",
                   help="more queries: JSON lines (field text) or one query a line")
    add_output(s)
    s.add_argument("queries", nargs="*", metavar="QUERY", help="query texts")
    s.set_defaults(func=cmd_search)
