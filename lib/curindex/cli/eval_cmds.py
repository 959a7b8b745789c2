"""`curindex eval`: a version's retrieval quality, as recorded by its build or measured live.

    curindex eval [--store URI] [--version V] [-o json]
        the recorded validation: the served search, every method's figures, the baseline
    curindex eval [--store URI] [--version V] --queries FILE [--all | --method M [--rounds R]
        [--seed S] [--seed-size N]] [--k 1,10] [--budgets 100,200] [--limit 100] [-o json]
        Top-k-Recall@budget measured live on the queries of FILE, against exact scores over
        every item (len(queries) x items model calls: keep the file small)

Live, the served search is measured unless ``--method`` (and its parameters) names another or
``--all`` asks for every method the version supports, each at the parameters its build chose
(``manifest.search.methods``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from curindex.cli.options import (
    add_output,
    add_store,
    add_version,
    int_list,
    positive_int,
    read_queries,
    version_of,
)
from curindex.cli.output import emit_json, progress, safe, table
from curindex.cli.search_cmd import add_method_options, open_searcher, search_in_batches

if TYPE_CHECKING:
    from curindex.manifest import Manifest
    from curindex.search import Searcher
    from curindex.search.methods import SearchSpec

EXACT_BATCH = 20  # queries scored against every item per call (a progress line after each)


def _spec_doc(spec: SearchSpec, *, served: bool) -> dict[str, Any]:
    return {"method": spec.describe(), "name": spec.method, "rounds": spec.rounds,
            "seed_size": spec.seed_size, "served": served}


def recorded(manifest: Manifest) -> dict[str, Any]:
    """The validation a version's build recorded: the served search and how it was chosen,
    every method's figures on the reporting test queries, the baseline and the gate."""
    from curindex.search.methods import SearchSpec

    v, search = manifest.validation, manifest.search
    if search is None:  # built before builds chose a search: plain CUR, measured alone
        served = {"method": "cur", "rounds": 1, "seed": "anchors", "seed_size": 0,
                  "budget": None}
        methods = [{**_spec_doc(SearchSpec("cur"), served=True), "recall": dict(v.recall)}]
        selection = None
    else:
        d = search.default
        served = {"method": d.method, "rounds": d.rounds, "seed": d.seed,
                  "seed_size": d.seed_size, "budget": d.budget}
        methods = [{**_spec_doc(SearchSpec(m.method, m.rounds, m.seed_size), served=m.served),
                    "recall": dict(m.recall)} for m in search.methods]
        s = search.selection
        selection = None if s is None else {
            "objective": list(s.objective), "n_tune": s.n_tune, "reason": s.reason,
            "candidates": [{"method": SearchSpec(c.method, c.rounds, c.seed_size).describe(),
                            "objective": c.objective, "below_best": c.below_best,
                            "below_best_se": c.below_best_se,
                            "measurably_worse": c.measurably_worse} for c in s.candidates]}
    return {"version": manifest.version, "source": "validation", "n_test": v.n_test,
            "served": served, "selection": selection, "methods": methods,
            "recall": dict(v.recall),
            "baseline": v.baseline and {"name": v.baseline.name, "recall": dict(v.baseline.recall)},
            "min_recall": dict(v.min_recall), "passed": v.passed, "failures": list(v.failures)}


def print_recorded(doc: dict[str, Any]) -> None:
    from curindex.quality.figures import Figure

    gate = "passed" if doc["passed"] else "FAILED"
    print(f"version {safe(doc['version'])}: validation on {doc['n_test']} held-out test "
          f"queries; quality gate {gate}")
    for failure in doc["failures"]:
        print(f"  {safe(failure)}")
    s = doc["served"]
    served = next((m["method"] for m in doc["methods"] if m["served"]), s["method"])
    print(f"served search: {served}" + (f" at budget {s['budget']}" if s["budget"] else ""))
    if doc["selection"]:
        print(f"  chosen because: {safe(doc['selection']['reason'])}")
    columns = [(m["method"] + (" *" if m["served"] else ""), m["recall"])
               for m in doc["methods"]]
    if doc["baseline"] and not any(m["name"] == "bi-rerank" for m in doc["methods"]):
        columns.append((f"baseline ({doc['baseline']['name']})", doc["baseline"]["recall"]))
    columns.append(("min", doc["min_recall"]))
    names = sorted({n for _, values in columns for n in values}, key=Figure.parse)
    rows = [["k@budget", *(label for label, _ in columns)]]
    rows += [[n, *(_rate(values.get(n)) for _, values in columns)] for n in names]
    print()
    for line in table(rows, right=range(1, len(columns) + 1)):
        print("  " + line)
    print("  (* the served search)")


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def specs_to_measure(args: argparse.Namespace, searcher: Searcher) -> list[SearchSpec]:
    """The searches `eval --queries` measures: --all, an explicit method, or the served one."""
    from curindex.search.methods import SearchSpec

    explicit = any(x is not None for x in (args.method, args.rounds, args.seed, args.seed_size))
    if args.all and explicit:
        raise ValueError("--all measures every method at its recorded parameters: give it "
                         "without --method, --rounds, --seed or --seed-size")
    if args.all:
        search = searcher.manifest.search if searcher.manifest else None
        if search is not None and search.methods:
            return [SearchSpec(m.method, m.rounds, m.seed_size) for m in search.methods]
        return [searcher.spec()]
    return [searcher.spec(method=args.method, rounds=args.rounds, seed=args.seed,
                          seed_size=args.seed_size)]


def exact_top(searcher: Searcher, queries: Sequence[str], k: int) -> list[list[str]]:
    """Per query, the ids of the exact model's top k over every item of the version."""
    from curindex.scoring.base import checked_scores

    ids, texts = searcher.shards.all_items()
    out: list[list[str]] = []
    for start in range(0, len(queries), EXACT_BATCH):
        batch = list(queries[start:start + EXACT_BATCH])
        exact = checked_scores(searcher.scorer.score_block(batch, texts), len(batch), len(texts),
                               where="every item (exact scores)")  # [n_q, n_items]
        out += [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in exact]
        progress(f"scored {len(out)}/{len(queries)} queries exactly against {len(ids)} items")
    return out


def live_recall(searcher: Searcher, queries: Sequence[str], specs: Sequence[SearchSpec],
                ks: Sequence[int], budgets: Sequence[int]) -> list[dict[str, float]]:
    """Per spec, Top-k-Recall@budget on `queries` ({"k@budget": mean recall}) against exact
    scores over every item: len(queries) x items model calls for the truth, then one search
    per spec and budget (a search's top k is a prefix of its top max-k)."""
    from curindex.quality.validation import runnable

    truth = exact_top(searcher, queries, max(ks))
    k_i = len(searcher.anchor_ids)
    out = []
    for spec in specs:
        recall: dict[str, float] = {}
        for budget in sorted(budgets):
            wanted = [k for k in ks if k < budget]
            if not wanted or not runnable(spec, budget, k_i) or budget > searcher.max_budget:
                continue
            progress(f"searching with {spec.describe()} at budget {budget} ...")
            got = search_in_batches(searcher, queries, k=max(wanted), budget=budget,
                                    method=spec.method, rounds=spec.rounds,
                                    seed_size=spec.seed_size or None)
            for k in wanted:
                recall[f"{k}@{budget}"] = float(np.mean(
                    [len(set(r.ids[:k]) & set(t[:k])) / k for r, t in zip(got, truth,
                                                                          strict=True)]))
        out.append(recall)
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    from curindex.manifest import read_manifest
    from curindex.store import Store

    version = version_of(args)
    if not args.queries:
        if args.all or any(x is not None for x in (args.method, args.rounds, args.seed,
                                                    args.seed_size)):
            raise ValueError("--all and --method measure live: give --queries FILE too "
                             "(without it eval prints the recorded validation of every "
                             "method)")
        store = Store.open(args.store)
        doc = {"store": store.uri, **recorded(read_manifest(store, store.resolve(version)))}
        if args.output == "json":
            emit_json(doc)
        else:
            print_recorded(doc)
        return 0
    queries = read_queries(args.queries)[: args.limit]
    searcher = open_searcher(args, version)
    specs = specs_to_measure(args, searcher)
    served = searcher.spec()
    figures = live_recall(searcher, queries, specs, args.k, args.budgets)
    methods = [{**_spec_doc(spec, served=spec == served), "recall": recall}
               for spec, recall in zip(specs, figures, strict=True)]
    if args.output == "json":
        emit_json({"store": args.store, "version": searcher.version, "source": "live",
                   "queries_file": args.queries, "n_queries": len(queries),
                   "n_items": searcher.n_items, "methods": methods})
        return 0
    print(f"version {safe(searcher.version)}: Top-k-Recall@budget live on {len(queries)} "
          f"queries from {safe(args.queries)} ({searcher.n_items} items)")
    for m in methods:
        print(f"\n{m['method']}" + (" (served)" if m["served"] else ""))
        rows = [["k", *(f"@{b}" for b in args.budgets)]]
        rows += [[str(k), *(_rate(m["recall"].get(f"{k}@{b}")) for b in args.budgets)]
                 for k in args.k]
        for line in table(rows, right=range(len(args.budgets) + 1)):
            print("  " + line)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    text = "recall of a version: its recorded validation, or measured live on your queries"
    e = sub.add_parser("eval", help=text, description=text)
    add_store(e)
    add_version(e)
    e.add_argument("--queries", metavar="FILE",
                   help="JSON lines (field text) or one query a line: measure live on these")
    e.add_argument("--all", action="store_true",
                   help="with --queries: every method the version supports, at its recorded "
                        "parameters")
    add_method_options(e)
    e.add_argument("--k", type=int_list, default=[1, 10],
                   help="comma-separated k values (default 1,10)")
    e.add_argument("--budgets", type=int_list, default=[100, 200],
                   help="comma-separated budgets (default 100,200)")
    e.add_argument("--limit", type=positive_int, default=100,
                   help="at most this many queries of the file (default 100)")
    e.add_argument("--scorer-path", help="where the scorer's model lives on this machine")
    e.add_argument("--scorer-target", metavar="MODULE:CALLABLE",
                   help="allow importing this callable scorer (see search --help)")
    add_output(e)
    e.set_defaults(func=cmd_eval)
