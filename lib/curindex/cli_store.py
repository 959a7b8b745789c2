"""Command-line access to an index store: list, publish, roll back, prune and verify versions.

Every command takes ``--store URI``; a :class:`~curindex.errors.StoreError` is left to the main
CLI, which prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from argparse import ArgumentParser
from collections.abc import Callable

from curindex.publish import publish_version, rollback
from curindex.store import Store


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def cmd_versions(args: argparse.Namespace) -> int:
    store = Store.open(args.store)
    current = store.current()
    complete, unreadable = store.versions_listing()
    rows = [("", "VERSION", "CREATED_AT", "FILES", "SIZE")]
    for version, manifest in complete:
        files = manifest["files"].values()
        mark = "*" if version == current else ""
        size = _size(sum(f["size"] for f in files))
        rows.append((mark, version, manifest["created_at"], str(len(files)), size))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        left = [cell.ljust(w) for cell, w in zip(row[:3], widths, strict=False)]
        right = [cell.rjust(w) for cell, w in zip(row[3:], widths[3:], strict=True)]
        print("  ".join(left + right).rstrip())
    if len(rows) == 1:
        print(f"(no complete versions in {store.uri})")
    for version, reason in unreadable:
        # One damaged manifest must not hide the rest of the store.
        print(f"skipped version {version}: {reason}", file=sys.stderr)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    store = Store.open(args.store)
    previous = store.current()
    publish_version(store, args.version)
    print(f"published {args.version} (previous: {previous})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    store = Store.open(args.store)
    previous = store.current()
    version = rollback(store, to=args.to)
    print(f"rolled back to {version} (was: {previous})")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    result = Store.open(args.store).prune(keep=args.keep, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    deleted = result.versions
    print(f"{verb} {len(deleted)} version(s)" + (": " + ", ".join(deleted) if deleted else ""))
    if result.build_states:
        print(f"{verb} the build state of {len(result.build_states)} build(s): "
              + ", ".join(result.build_states))
    if result.work_dirs:
        print(f"{verb} {len(result.work_dirs)} work folder(s): " + ", ".join(result.work_dirs))
    for what, why in result.skipped:
        print(f"kept {what}: {why}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = Store.open(args.store)
    version = store.resolve(args.version)
    store.verify(version)
    manifest = store.read_manifest(version)
    refs = len(manifest["references"])
    print(f"ok: {version} ({len(manifest['files'])} files"
          + (f" and {refs} referenced files" if refs else "") + " verified)")
    return 0


def add_store_commands(sub: argparse._SubParsersAction) -> None:
    """Add the store subcommands to the main CLI's subparsers."""

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str) -> ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--store", required=True, metavar="URI", help="index store path or URI")
        p.set_defaults(func=func)
        return p

    add("versions", cmd_versions, "list the complete versions in a store (* marks current)")
    p = add("publish", cmd_publish, "verify a version and make it current")
    p.add_argument("version", metavar="VERSION")
    p = add("rollback", cmd_rollback, "make the previous (or a given) version current again")
    p.add_argument("--to", metavar="VERSION", default=None, help="version to make current")
    p = add("prune", cmd_prune, "delete old versions, never the current or previous one")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="newest versions kept")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be deleted, delete nothing")
    p = add("verify", cmd_verify, "check every file of a version against its manifest")
    p.add_argument("version", metavar="VERSION", nargs="?", default="current")
