"""`curindex versions|publish|rollback|prune|verify`: an index store from the command line.

    curindex versions [--store URI] [-o json]
    curindex publish  [--store URI] --version V [--allow-scorer-change] [-o json]  (or: V)
    curindex rollback [--store URI] [--to V]     [-o json]
    curindex prune    [--store URI] --keep N [--dry-run] [--work-dir URI] [-o json]
    curindex verify   [--store URI] [--version V] [-o json]   (or: verify V)

Every command opens the store without creating it: a store that does not exist is an error
(StoreNotFoundError), never an empty listing, and `prune` on a mistyped path creates nothing.
Errors are raised to the main CLI, which prints them and exits with their code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from curindex.cli.options import add_output, add_store, add_version, version_of
from curindex.cli.output import emit_json, safe, size, table


def _open(args: argparse.Namespace) -> Any:
    from curindex.store import Store

    return Store.open(args.store)


def cmd_versions(args: argparse.Namespace) -> int:
    store = _open(args)
    current = store.current()
    complete, unreadable = store.versions_listing()
    rows = [{"version": v, "created_at": m.get("created_at", ""), "files": len(m["files"]),
             "bytes": sum(f["size"] for f in m["files"].values()), "current": v == current,
             **version_facts(m)} for v, m in complete]
    for version, reason in unreadable:
        # One damaged manifest must not hide the rest of the store.
        print(f"skipped version {safe(version)}: {safe(reason)}", file=sys.stderr)
    if args.output == "json":
        emit_json({"store": store.uri, "current": current, "versions": rows,
                   "unreadable": [{"version": v, "reason": r} for v, r in unreadable]})
        return 0
    cells = [["", "VERSION", "CREATED_AT", "SCORER", "SERVES", "RECALL", "FILES", "SIZE"]]
    cells += [["*" if r["current"] else "", r["version"], str(r["created_at"]),
               _scorer_text(r["scorer"]), _served_text(r["served"]),
               _recall_text(r["recall"], r["objective"]), str(r["files"]), size(r["bytes"])]
              for r in rows]
    for line in table(cells, right=(6, 7)):
        print(line)
    if not rows:
        print(f"(no complete versions in {safe(store.uri)})")
    return 0


def version_facts(m: dict[str, Any]) -> dict[str, Any]:
    """What `versions` shows of a manifest besides its files: the scorer (kind, fingerprint),
    the served search and its budget, its recall figures ("k@budget" -> value) and the figure
    the build chose the search on (its selection's objective, else its config's, else
    "10@200", the first that was measured); None where the manifest records nothing (an older
    or a hand-made version) or records something of the wrong type (a damaged one must not
    stop the listing)."""
    scorer, search = _section(m, "scorer"), _section(m, "search", "default")
    served = None
    try:
        if isinstance(search.get("method"), str):
            from curindex.search.methods import SearchSpec

            served = {"search": SearchSpec(search["method"], int(search.get("rounds") or 1),
                                           int(search.get("seed_size") or 0)).describe(),
                      "budget": search.get("budget")}
    except (TypeError, ValueError):
        served = None
    recall = {str(k): float(v) for k, v in _section(m, "validation", "recall").items()
              if type(v) in (int, float)}
    chosen = _section(m, "search", "selection").get("objective")
    objective = _section(m, "config", "validate").get("objective")
    wanted = [*map(str, chosen if isinstance(chosen, list) else []),
              *(n.strip() for n in str(objective or "").split(",") if n.strip()), "10@200"]
    fingerprint = scorer.get("fingerprint")
    return {"scorer": {"kind": str(scorer.get("kind")), "fingerprint": fingerprint}
            if isinstance(fingerprint, str) and fingerprint else None,
            "served": served, "recall": recall,
            "objective": next((n for n in wanted if n in recall), None)}


def _section(doc: Any, *keys: str) -> dict[str, Any]:
    """doc[k1][k2]..., or {} where a step is missing or not an object."""
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc if isinstance(doc, dict) else {}


def _scorer_text(scorer: dict[str, Any] | None) -> str:
    if scorer is None:
        return "-"
    digest = str(scorer["fingerprint"]).removeprefix("sha256:")[:8]
    return f"{scorer['kind']} {digest}"


def _served_text(served: dict[str, Any] | None) -> str:
    return "-" if served is None else f"{served['search']} @{served['budget']}"


def _recall_text(recall: dict[str, float], figure: str | None) -> str:
    if figure is None:
        return "-"
    k, _, budget = figure.partition("@")
    return f"top-{k}@{budget} {recall[figure]:.4f}"


def cmd_publish(args: argparse.Namespace) -> int:
    from curindex.ops.publish import publish_version

    store = _open(args)
    version = version_of(args)
    previous = store.current()
    publish_version(store, version, allow_scorer_change=args.allow_scorer_change)
    if args.output == "json":
        emit_json({"store": store.uri, "version": version, "previous": previous})
    else:
        print(f"published {safe(version)} (previous: {safe(previous)})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from curindex.ops.publish import rollback

    store = _open(args)
    previous = store.current()
    version = rollback(store, to=args.to)
    if args.output == "json":
        emit_json({"store": store.uri, "version": version, "previous": previous})
    else:
        print(f"rolled back to {safe(version)} (was: {safe(previous)})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    store = _open(args)
    result = store.prune(keep=args.keep, dry_run=args.dry_run, work_roots=args.work_dir or [])
    if args.output == "json":
        emit_json({"store": store.uri, "keep": args.keep, "dry_run": args.dry_run,
                   "versions": result.versions, "build_states": result.build_states,
                   "work_dirs": result.work_dirs, "history_entries": result.history_entries,
                   "skipped": [{"what": w, "why": y} for w, y in result.skipped]})
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    deleted = [safe(v) for v in result.versions]
    print(f"{verb} {len(deleted)} version(s)" + (": " + ", ".join(deleted) if deleted else ""))
    if result.build_states:
        print(f"{verb} the build state of {len(result.build_states)} build(s): "
              + ", ".join(map(safe, result.build_states)))
    if result.work_dirs:
        print(f"{verb} {len(result.work_dirs)} work folder(s): "
              + ", ".join(map(safe, result.work_dirs)))
    for what, why in result.skipped:
        print(f"kept {safe(what)}: {safe(why)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = _open(args)
    version = store.resolve(version_of(args))
    store.verify(version)  # IntegrityError naming the first bad file
    manifest = store.read_manifest(version)
    files, refs = len(manifest["files"]), len(manifest.get("references") or {})
    if args.output == "json":
        emit_json({"store": store.uri, "version": version, "ok": True, "files": files,
                   "references": refs})
    else:
        print(f"ok: {safe(version)} ({files} files"
              + (f" and {refs} referenced files" if refs else "") + " verified)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the store subcommands to the main CLI's subparsers."""

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        add_store(p)
        add_output(p)
        p.set_defaults(func=func)
        return p

    add("versions", cmd_versions, "list the complete versions in a store (* marks current)")
    p = add("publish", cmd_publish, "verify a version, check its quality gate, make it current")
    add_version(p, positional=True, default=None)
    p.add_argument("--allow-scorer-change", action="store_true",
                   help="publish even when the current version was built with another scorer "
                        "(every reader then loads the new model)")
    p = add("rollback", cmd_rollback, "make the previous (or a given) version current again")
    p.add_argument("--to", metavar="VERSION", default=None, help="version to make current")
    p = add("prune", cmd_prune, "delete old versions, never the current or previous one")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="newest versions kept")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be deleted, delete nothing")
    p.add_argument("--work-dir", action="append", metavar="URI",
                   help="a [store] work_dir the builds used (repeatable): work folders under it "
                        "may be deleted; others outside the store's _work/ are kept")
    p = add("verify", cmd_verify, "check every file of a version against its manifest")
    add_version(p, positional=True)
