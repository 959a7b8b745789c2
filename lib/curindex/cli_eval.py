"""`curindex report` and `curindex eval`: a version's quality, in the terminal.

    curindex report --store URI [VERSION] [--out DIR]
    curindex eval --store URI [--version V] [--queries FILE] [--k 1,10] [--budgets 100,200]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from curindex.manifest import read_manifest
from curindex.store import Store


def cmd_report(args: argparse.Namespace) -> int:
    from curindex.report import render_report, summary_table

    store = Store.open(args.store)
    version = store.resolve(args.version)
    manifest = read_manifest(store, version)
    print(summary_table(manifest))
    out = Path(args.out or os.path.join(tempfile.gettempdir(), "curindex-reports", version))
    out.mkdir(parents=True, exist_ok=True)
    stored = sorted(p for p in manifest.files if p.startswith("report/"))
    if stored:  # the report written at build time, verified against the manifest
        for rel in stored:
            (out / rel.removeprefix("report/")).write_bytes(
                Path(store.local_path(version, rel)).read_bytes())
    else:  # a version built before reports existed: render one from its manifest
        for name, data in render_report(manifest).items():
            (out / name).write_bytes(data)
    print(f"\nreport: {out / 'report.html'}")
    return 0


def _read_queries(path: str) -> list[str]:
    """Query texts from a JSON-lines file (field "text") or a plain file (one per line)."""
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if lines and lines[0].lstrip().startswith("{"):
        return [json.loads(ln)["text"] for ln in lines]
    return lines


def live_recall(searcher, queries: list[str], ks: list[int], budgets: list[int]
                ) -> dict[str, float]:
    """Top-k-Recall@budget of the Searcher on `queries`, against exact scores over every item
    (len(queries) x items model calls: keep the query set small)."""
    from curindex.figures import figure_grid

    ids, texts = searcher.shards.all_items()
    exact = searcher.scorer.score_block(queries, texts)  # [n_q, n]
    truth = [[ids[j] for j in np.argsort(-exact[q], kind="stable")] for q in range(len(queries))]
    out = {}
    for figure in figure_grid(ks, budgets, min_budget=len(searcher.anchor_ids)):
        k = figure.k
        got = searcher.search(queries, k=k, budget=figure.budget)
        out[str(figure)] = float(np.mean([len(set(r.ids) & set(truth[q][:k])) / k
                                             for q, r in enumerate(got)]))
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    from curindex.report import summary_table

    store = Store.open(args.store)
    version = store.resolve(args.version)
    if not args.queries:
        print(summary_table(read_manifest(store, version)))
        return 0
    from curindex.search import Searcher

    searcher = Searcher.open(args.store, version)
    queries = _read_queries(args.queries)[: args.limit]
    ks = [int(x) for x in args.k.split(",")]
    budgets = [int(x) for x in args.budgets.split(",")]
    recall = live_recall(searcher, queries, ks, budgets)
    print(f"version {version}: Top-k-Recall@budget on {len(queries)} queries "
          f"from {args.queries} ({searcher.n_items} items)")
    print(f"  {'k':>5}  " + "  ".join(f"{'@' + str(b):>8}" for b in budgets))
    for k in ks:
        cells = [f"{recall[f'{k}@{b}']:8.4f}" if f"{k}@{b}" in recall else f"{'-':>8}"
                 for b in budgets]
        print(f"  {k:>5}  " + "  ".join(cells))
    return 0


def add_eval_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="print a version's quality report and write its HTML")
    r.add_argument("--store", required=True, help="store URI")
    r.add_argument("version", nargs="?", default="current", help="version (default: current)")
    r.add_argument("--out", help="folder for report.html and its plots (default: a temp folder)")
    r.set_defaults(func=cmd_report)
    e = sub.add_parser("eval", help="recall of a version: its validation, or live on queries")
    e.add_argument("--store", required=True, help="store URI")
    e.add_argument("--version", default="current", help="version (default: current)")
    e.add_argument("--queries", help="JSONL (field text) or text file: measure live on these")
    e.add_argument("--k", default="1,10", help="comma-separated k values (default 1,10)")
    e.add_argument("--budgets", default="100,200", help="comma-separated budgets")
    e.add_argument("--limit", type=int, default=100, help="at most this many queries")
    e.set_defaults(func=cmd_eval)
