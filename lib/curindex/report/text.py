"""The report in the terminal: a plain-text summary a reviewer reads before opening the page."""

from __future__ import annotations

from typing import Any

from curindex.manifest import Manifest
from curindex.quality.figures import Figure
from curindex.report.content import report_figures
from curindex.report.fmt import (
    num,
    per_s,
    rate,
    sec,
    signed_int,
    signed_rate,
    signed_size,
    size,
    text_table,
)


def summary_table(manifest: Manifest, *, previous: Manifest | None = None,
                  recorded: dict[str, Any] | None = None) -> str:
    """Plain text: the version and its served search, the gate's verdict, the comparison with
    `previous` (the published version) when given, the served search's recall beside the
    bi-encoder baseline's (and exact search's, and the thresholds), counts and timings.
    `recorded`: the version's stored ``report.json``, whose comparison (made when it was
    built, as its HTML page shows it) is printed instead."""
    f = report_figures(manifest, previous=previous)
    if recorded is not None:
        f["comparison"] = recorded.get("comparison")
    h, gate, search = f["headline"], f["gate"], f["search"]
    served = search["served"]
    lines = [
        f"version {f['version'] or '?'}  created {f['created_at'] or '?'}  items "
        f"{num(h['items'])}  k_q {num(h['k_q'])}  k_i {num(h['k_i'])}  scorer "
        f"{h['scorer'] or '?'}  index {h['index'] or '?'}",
        f"served search: {served['name']} at budget {served['budget']}"
        + (f" ({search['note']})" if search["note"] else ""),
        f"gate: {gate['verdict']}" + ("" if gate["measured"] else " (recall not measured)")
        + "".join(f"\n  {x}" for x in gate["failures"]),
        "",
        *_comparison_lines(f["comparison"]),
    ]
    lines += _recall_lines(f)
    if f["counts"]:
        lines += ["", "counts", *text_table(None, [[k, num(v)] for k, v in f["counts"].items()])]
    tp = f["score_throughput"]
    if tp["mean_items_per_s"] is not None:
        lines.append(f"\nscore stage: {per_s(tp['mean_items_per_s'])} items/s, "
                     f"{per_s(tp['mean_pairs_per_s'])} pairs/s")
    if f["timings_s"]:
        rows = [[k, sec(v)] for k, v in f["timings_s"].items()]
        lines += ["", "timings (s)", *text_table(None, [*rows, ["total",
                                                                sec(f["timings_total_s"])]])]
    return "\n".join(lines) + "\n"


def _comparison_lines(c: dict[str, Any] | None) -> list[str]:
    if c is None:
        return ["no published version to compare with"]
    if not c.get("comparable", True):
        return [f"not compared with published version {c['previous_version']}: {c['reason']}"]
    s = c["served"]
    rows = [["served search", f"{s['then']} @{s['then_budget']}",
             f"{s['now']} @{s['now_budget']}", "changed" if s["changed"] else "unchanged"]]
    rows += [[r["figure"], rate(r["then"]), rate(r["now"]), signed_rate(r["delta"])]
             for r in c["recall"]]
    rows += [["items", num(c["items"]["then"]), num(c["items"]["now"]),
              signed_int(c["items"]["delta"])],
             ["total bytes", size(c["total_bytes"]["then"]), size(c["total_bytes"]["now"]),
              signed_size(c["total_bytes"]["delta"])],
             ["gate", c["gate"]["then"], c["gate"]["now"], ""]]
    return [f"compared with published version {c['previous_version']}:",
            *text_table(["", "published", "this version", "change"], rows)]


def _recall_lines(f: dict[str, Any]) -> list[str]:
    """The served search's figures beside the bi-encoder baseline's (and its lift), exact
    search's, and the gate's thresholds."""
    rows, floors = f["methods"], f["gate"]["min_recall"]
    served = next(r for r in rows if r["served"])
    base = next((r for r in rows if r["baseline"]), None)
    exact = next((r for r in rows if r["kind"] == "exact-search"), None)
    columns = [(f"served: {served['name']}", served["recall"])]
    if base is not None:
        columns.append(("bi-encoder", base["recall"]))
    if exact is not None:
        columns.append(("cur, exact search", exact["recall"]))
    names = sorted({n for _, rec in columns for n in rec} | set(floors), key=Figure.parse)
    if not names:
        return []
    header = ["Top-k@budget", *(label for label, _ in columns)]
    header += ["lift"] if base is not None else []
    table_rows = []
    for n in names:
        row = [n, *(rate(rec.get(n)) for _, rec in columns)]
        if base is not None:
            a, b = served["recall"].get(n), base["recall"].get(n)
            row.append(signed_rate(None if a is None or b is None else a - b))
        table_rows.append([*row, rate(floors.get(n))])
    out = ["", *text_table([*header, "min"], table_rows)]
    ivx = f["recall"]["index_vs_exact"]
    if ivx:
        out.append("index candidates vs exact search: " + "  ".join(
            f"@{b} {rate(v)}" for b, v in sorted(ivx.items(), key=lambda kv: int(kv[0]))))
    return out
