"""The report page (``report.html``): one self-contained file, from the report's figures and
plots. Its order is a reviewer's: what changed since the published version first, then the
gate, the served search and why, every method's recall, sizes, times, and the manifest."""

from __future__ import annotations

from typing import Any

from curindex.quality.figures import Figure
from curindex.report import page_figures as pf
from curindex.report.fmt import (
    DASH,
    num,
    rate,
    signed_int,
    signed_rate,
    signed_size,
    size,
    to_json,
)
from curindex.report.htmlkit import CSS, cell, e, head, kv_table, signed_class, table

NO_MATPLOTLIB = ("Plots are missing: matplotlib is not installed "
                 "(pip install 'curindex[report]').")


def render_page(f: dict[str, Any], plots: dict[str, bytes] | None) -> str:
    """The HTML page. `plots`: {name: PNG} as drawn, None when matplotlib is missing."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>curindex report {e(f['version'] or '')}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Index version {e(f['version'] or '?')}</h1>",
        f"<p>created {e(f['created_at'] or DASH)}</p>",
        comparison_html(f["comparison"]),
        gate_html(f["gate"]),
    ]
    if plots is None:
        parts.append(f"<p><em>{e(NO_MATPLOTLIB)}</em></p>")
    parts += [
        "<h2>Version</h2>", version_html(f),
        "<h2>Served search</h2>", search_html(f["search"]),
        "<h2>Top-k-Recall@budget of every method</h2>", pf.recall_html(f, plots),
        "<h2>Shard sizes</h2>", pf.shards_html(f["shards"]),
        "<h2>Score stage throughput</h2>", pf.throughput_html(f["score_throughput"], plots),
        "<h2>Stage times</h2>", pf.timings_html(f, plots),
        "<h2>Factorization</h2>", pf.factorization_html(f["factorization"], plots),
        "<h2>Counts</h2>", kv_table(list(f["counts"].items())),
    ]
    if f["incremental"]:
        parts += ["<h2>Incremental build</h2>", kv_table(
            [(k, ", ".join(map(str, v)) if isinstance(v, list) else v)
             for k, v in f["incremental"].items()])]
    config = f["manifest"].get("config")
    parts += [
        "<h2>Config and manifest</h2>",
        f"<details><summary>config</summary><pre>{e(to_json(config or {}))}</pre></details>",
        f"<details><summary>manifest</summary><pre>{e(to_json(f['manifest']))}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def comparison_html(c: dict[str, Any] | None) -> str:
    """Then (the published version) and now, with the change: served search and its figures,
    items, total bytes, gate."""
    if c is None:
        return ('<section class="compare"><h2>Compared with the published version</h2>'
                "<p>No published version to compare with.</p></section>")
    if not c.get("comparable", True):
        return ('<section class="compare"><h2>Compared with the published version</h2>'
                f"<p>Not compared with published version {e(c['previous_version'])}: "
                f"{e(c['reason'])}.</p></section>")
    served = c["served"]
    rows = [[head("served search"), cell(f"{served['then']} at budget {served['then_budget']}"),
             cell(f"{served['now']} at budget {served['now_budget']}"),
             cell("changed" if served["changed"] else "unchanged",
                  "none" if served["changed"] else "")]]
    rows += [[head(Figure.parse(r["figure"]).label), cell(rate(r["then"])), cell(rate(r["now"])),
              cell(signed_rate(r["delta"]), signed_class(r["delta"]))] for r in c["recall"]]
    items, size_ = c["items"], c["total_bytes"]
    rows += [[head("items"), cell(num(items["then"])), cell(num(items["now"])),
              cell(signed_int(items["delta"]))],
             [head("total bytes"), cell(size(size_["then"])), cell(size(size_["now"])),
              cell(signed_size(size_["delta"]))],
             [head("quality gate"), cell(c["gate"]["then"]), cell(c["gate"]["now"]),
              cell("")]]
    header = ["", f"published {c['previous_version']}", "this version", "change"]
    return ('<section class="compare"><h2>Compared with the published version</h2>'
            f"<p>Published version {e(c['previous_version'])}, created "
            f"{e(c['previous_created_at'] or DASH)}. Recall is the served search's, on each "
            "version's own reporting test queries.</p>" + table(header, rows) + "</section>")


def gate_html(gate: dict[str, Any]) -> str:
    word = gate["verdict"]
    cls = {"PASSED": "pass", "FAILED": "fail"}.get(word, "none")
    out = f'<p>Quality gate: <span class="{cls}">{e(word)}</span>'
    if not gate["measured"]:
        out += " (recall not measured)"
    out += "</p>"
    if gate["failures"]:
        out += "<ul>" + "".join(f'<li class="fail">{e(x)}</li>' for x in gate["failures"]) \
            + "</ul>"
    if gate["configured"]:
        floors = sorted((Figure.parse(n), v) for n, v in gate["min_recall"].items())
        lift = gate["min_lift_over_baseline"]
        lifts = [] if lift is None else [("min lift over the bi-encoder baseline",
                                          signed_rate(lift))]
        out += kv_table([*((f"min {fig.label}", rate(v)) for fig, v in floors), *lifts])
    return out


def version_html(f: dict[str, Any]) -> str:
    h, gate = f["headline"], f["gate"]
    fp = h["scorer_fingerprint"]
    shards = (f"{num(h['shard_items_min'])} – {num(h['shard_items_max'])}"
              if h["shard_items_min"] is not None else None)
    return kv_table([
        ("created", f["created_at"] or None),
        ("items", h["items"]),
        ("items truncated (longer than the scorer reads)", h["items_truncated"]),
        ("k_q (anchor queries)", h["k_q"]),
        ("k_i (anchor items)", h["k_i"]),
        ("test queries reported on", gate["n_test"]),
        ("tuning queries (choose the search, not reported)", h["n_tune"]),
        ("scorer", f"{h['scorer'] or '?'}" + (f" ({fp})" if fp else "")),
        ("index", h["index"]),
        ("items per shard", shards),
        ("total bytes", size(h["total_bytes"]) if h["total_bytes"] is not None
         else "not recorded in this manifest"),
    ])


def search_html(s: dict[str, Any]) -> str:
    served = s["served"]
    out = (f"<p>This version serves <strong>{e(served['name'])}</strong> at budget "
           f"{e(served['budget'])}")
    out += f" ({e(s['note'])}).</p>" if s["note"] else ".</p>"
    sel = s["selection"]
    if sel is None:
        return out
    objective = ", ".join(Figure.parse(n).label for n in sel["objective"])
    made = (f" ({e(sel['synthetic'])} made from items: the log's test queries left too few)"
            if sel.get("synthetic") else "")
    out += (f"<p>Chosen on {e(sel['n_tune'])} tuning queries{made} by the mean of "
            f"{e(objective or DASH)}: {e(sel['reason'].rstrip('.'))}.</p>")
    if sel["candidates"]:
        header = ["candidate", "objective", "below best", "± s.e.", "measurably worse"]
        rows = [[head(c["name"] + (" (served)" if c["name"] == served["name"] else "")),
                 cell(rate(c["objective"])), cell(rate(c["below_best"])),
                 cell(rate(c["below_best_se"])), cell("yes" if c["measurably_worse"] else "no")]
                for c in sel["candidates"]]
        classes = ["served" if c["name"] == served["name"] else "" for c in sel["candidates"]]
        out += table(header, rows, row_classes=classes)
    return out
