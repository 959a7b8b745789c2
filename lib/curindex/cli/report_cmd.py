"""`curindex report`: a version's build report in the terminal, and its HTML page on disk.

    curindex report [--store URI] [--version V] [--out DIR] [-o json]   (or: report V)

The page is the one the build stored in the version (verified against the manifest), with the
comparison made when it was built, which the terminal text shows too; a version built before
reports existed gets one rendered from its manifest, beside the version published now. The
files go to ``--out DIR``, else to this user's private ``<temp dir>/curindex-<uid>/reports/
<version>/``. With ``-o json`` stdout holds ``{"version", "out", "html", "report"}``, where
``report`` is the page's ``report.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

from curindex.cli.options import add_output, add_store, add_version, version_of
from curindex.cli.output import emit_json, safe
from curindex.errors import IntegrityError


def cmd_report(args: argparse.Namespace) -> int:
    from curindex.manifest import read_manifest
    from curindex.report import render_report, summary_table
    from curindex.store import Store
    from curindex.store.io import loads

    store = Store.open(args.store)
    version = store.resolve(version_of(args))
    manifest = read_manifest(store, version)
    out = Path(args.out) if args.out else user_report_dir() / version
    out.mkdir(parents=True, exist_ok=True)
    stored = sorted(p for p in manifest.files if p.startswith("report/"))
    previous = None
    if stored:  # the report written at build time, checked against the manifest
        for rel in stored:
            data = Path(store.local_path(version, rel)).read_bytes()
            if hashlib.sha256(data).hexdigest() != manifest.files[rel].sha256:
                raise IntegrityError(f"version {version}: {rel} differs from its manifest "
                                     "(sha256)")
            (out / rel.removeprefix("report/")).write_bytes(data)
    else:  # a version built before reports existed: rendered, beside the published one
        current = store.current()
        previous = read_manifest(store, current) if current not in (None, version) else None
        for name, data in render_report(manifest, previous=previous).items():
            (out / name).write_bytes(data)
    html, report_json = out / "report.html", out / "report.json"
    try:  # read from the store: bounded like every JSON document read there
        recorded = loads(report_json.read_bytes()) if report_json.is_file() else None
    except ValueError as e:
        raise IntegrityError(f"version {version}: report/report.json: {e}") from e
    if args.output == "json":
        emit_json({"store": store.uri, "version": version, "out": str(out), "html": str(html),
                   "report": recorded})
        return 0
    # the terminal shows the comparison the page shows (made when the page was rendered)
    print(summary_table(manifest, previous=previous,
                        recorded=recorded if stored else None))
    print(f"\nreport: {safe(html)}")
    return 0


def user_report_dir() -> Path:
    """``<temp dir>/curindex-<uid>/reports``: this user's own folder (mode 0700), so that
    users of one machine neither share nor overwrite each other's reports. CurIndexError when
    the folder exists but is not this user's private folder (or is a link)."""
    from curindex.errors import CurIndexError

    uid = os.getuid() if hasattr(os, "getuid") else None
    base = Path(tempfile.gettempdir()) / f"curindex-{uid if uid is not None else 'user'}"
    base.mkdir(mode=0o700, exist_ok=True)
    info = base.lstat()
    if base.is_symlink() or (uid is not None and (info.st_uid != uid or info.st_mode & 0o077)):
        raise CurIndexError(f"{base} is not this user's private folder; give --out DIR")
    return base / "reports"


def add_commands(sub: argparse._SubParsersAction) -> None:
    text = "print a version's build report and write its HTML page"
    r = sub.add_parser("report", help=text, description=text)
    add_store(r)
    add_version(r, positional=True)
    r.add_argument("--out", metavar="DIR",
                   help="folder for report.html and its plots (default: "
                        "<temp dir>/curindex-<uid>/reports/<version>)")
    add_output(r)
    r.set_defaults(func=cmd_report)
