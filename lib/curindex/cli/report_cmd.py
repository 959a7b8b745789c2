"""`curindex report`: a version's build report in the terminal, and its HTML page on disk.

    curindex report [--store URI] [--version V] [--out DIR] [-o json]   (or: report V)

The page is the one the build stored in the version (verified against the manifest); a version
built before reports existed gets one rendered from its manifest. With ``-o json`` stdout holds
``{"version", "out", "html", "report"}``, where ``report`` is the page's ``report.json``.
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
    out = Path(args.out or os.path.join(tempfile.gettempdir(), "curindex-reports", version))
    out.mkdir(parents=True, exist_ok=True)
    stored = sorted(p for p in manifest.files if p.startswith("report/"))
    if stored:  # the report written at build time, checked against the manifest
        for rel in stored:
            data = Path(store.local_path(version, rel)).read_bytes()
            if hashlib.sha256(data).hexdigest() != manifest.files[rel].sha256:
                raise IntegrityError(f"version {version}: {rel} differs from its manifest "
                                     "(sha256)")
            (out / rel.removeprefix("report/")).write_bytes(data)
    else:  # a version built before reports existed: render one from its manifest
        for name, data in render_report(manifest).items():
            (out / name).write_bytes(data)
    html = out / "report.html"
    if args.output == "json":
        report_json = out / "report.json"
        try:  # read from the store: bounded like every JSON document read there
            report = loads(report_json.read_bytes()) if report_json.is_file() else None
        except ValueError as e:
            raise IntegrityError(f"version {version}: report/report.json: {e}") from e
        emit_json({"store": store.uri, "version": version, "out": str(out), "html": str(html),
                   "report": report})
        return 0
    print(summary_table(manifest))
    print(f"\nreport: {safe(html)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    text = "print a version's build report and write its HTML page"
    r = sub.add_parser("report", help=text, description=text)
    add_store(r)
    add_version(r, positional=True)
    r.add_argument("--out", metavar="DIR",
                   help="folder for report.html and its plots (default: a temp folder)")
    add_output(r)
    r.set_defaults(func=cmd_report)
