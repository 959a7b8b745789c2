"""A version's build report from its manifest: figures as JSON, a self-contained HTML page and
PNG plots. Pure: no Spark and no store I/O, so it can run anywhere a manifest is at hand.

The report is stored inside the (immutable, checksummed) version, so the same manifests must
give the same bytes: JSON keys are sorted and the PNGs carry no software or date metadata.
matplotlib is optional (the ``report`` extra); without it the page is rendered without plots
and says so.

Modules: ``content`` (the figures, ``report.json``), ``served`` (the served search's name and
the gate's verdict), ``compare`` (against the published version), ``series`` (the data each
plot draws), ``plots``, ``page`` / ``page_figures`` / ``htmlkit`` (the HTML), ``text`` (the
terminal table), ``fmt`` (number formats). Tested in ``tests/test_report.py``.
"""

from __future__ import annotations

from curindex.manifest import Manifest
from curindex.report.content import REPORT_FORMAT, report_figures
from curindex.report.fmt import to_json
from curindex.report.page import render_page
from curindex.report.plots import plots
from curindex.report.series import recall_panels
from curindex.report.text import summary_table

__all__ = ["REPORT_FORMAT", "recall_panels", "render_report", "report_figures",
           "summary_table"]


def render_report(manifest: Manifest, *, previous: Manifest | None = None
                  ) -> dict[str, bytes]:
    """The report files of a version: report.json, report.html and, when matplotlib is
    installed, the PNG plots there is data for (recall.png, singular_values.png,
    stage_times.png, score_throughput.png). `previous`: the currently published version, the
    page's first section compares with it (None: "no published version to compare with")."""
    figures = report_figures(manifest, previous=previous)
    drawn = plots(figures)
    out = {"report.json": to_json(figures).encode(),
           "report.html": render_page(figures, drawn).encode()}
    out.update(drawn or {})
    return out
