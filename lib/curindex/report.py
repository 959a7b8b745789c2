"""A version's build report from its manifest: figures as JSON, a self-contained HTML page,
and two plots. Pure: no Spark and no store I/O, so it can run anywhere a manifest is at hand.

The report is stored inside the (immutable, checksummed) version, so the same manifest must give
the same bytes: JSON keys are sorted and the PNGs carry no software or date metadata.
matplotlib is optional (the ``report`` extra); without it the page is rendered without plots.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

from curindex.figures import Figure
from curindex.manifest import Manifest

REPORT_FORMAT = 1

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.pass{color:#176f2c;font-weight:bold}.fail{color:#b00020;font-weight:bold}
td.gate{outline:2px solid #555;outline-offset:-2px}td.gate.fail{background:#fde4e7}
td.gate.pass{background:#e3f4e6}small{color:#666}img{max-width:100%}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:12px}
"""


def render_report(manifest: Manifest) -> dict[str, bytes]:
    """The report files of a version: report.json, report.html and, when matplotlib is
    installed, recall.png (when recall was measured) and singular_values.png."""
    figures = report_figures(manifest)
    plots = _plots(figures)
    out = {"report.json": _json(figures).encode()}
    out["report.html"] = _html(figures, plots).encode()
    out.update(plots or {})
    return out


def report_figures(manifest: Manifest) -> dict[str, Any]:
    """The figures of the report as one JSON-ready dict."""
    v, anchors, index = manifest.validation, manifest.anchors, manifest.index
    doc = manifest.to_dict()
    shard_sizes = [s.n_items for s in index.shards]
    return {
        "report_format": REPORT_FORMAT,
        "version": manifest.version,
        "created_at": manifest.created_at,
        "headline": {
            "items": manifest.counts.items,
            "k_q": anchors.n_queries,
            "k_i": anchors.n_items,
            "scorer": manifest.scorer.kind,
            "scorer_fingerprint": manifest.scorer.fingerprint,
            "index": index.factory,
            "shard_items_min": min(shard_sizes, default=None),
            "shard_items_max": max(shard_sizes, default=None),
        },
        "recall": {
            "ours": dict(v.recall),
            "exact_search": dict(v.recall_exact_search),
            "index_vs_exact": dict(v.index_recall_vs_exact),
            "baseline": v.baseline and {"name": v.baseline.name,
                                        "recall": dict(v.baseline.recall)},
        },
        "gate": {
            "measured": bool(v.recall),
            "passed": v.passed,
            "min_recall": dict(v.min_recall),
            "failures": list(v.failures),
            "n_test": v.n_test,
        },
        "counts": doc["counts"],
        "timings_s": dict(manifest.timings_s),
        "factorization": doc["factorization"],
        "manifest": {k: val for k, val in doc.items() if k != "files"},
    }


def summary_table(manifest: Manifest) -> str:
    """A plain-text table for the terminal: recall (ours, exact search, baseline, threshold),
    gate, counts and timings."""
    f = report_figures(manifest)
    h, r, gate = f["headline"], f["recall"], f["gate"]
    lines = [
        f"version {f['version'] or '?'}  items {_num(h['items'])}  k_q {_num(h['k_q'])}  "
        f"k_i {_num(h['k_i'])}  scorer {h['scorer'] or '?'}  index {h['index'] or '?'}",
        f"gate: {_gate_word(gate)}" + "".join(f"\n  {x}" for x in gate["failures"]),
    ]
    series = _series(r)
    names = sorted({n for _, rec in series for n in rec} | set(gate["min_recall"]),
                   key=Figure.parse)
    if names:
        header = ["Top-k@budget", *(label for label, _ in series), "min"]
        rows = [[n, *(_rate(rec.get(n)) for _, rec in series),
                 _rate(gate["min_recall"].get(n))] for n in names]
        lines += ["", *_text_table(header, rows)]
    if r["index_vs_exact"]:
        lines.append("index candidates vs exact search: " + "  ".join(
            f"@{b} {_rate(v)}" for b, v in sorted(r["index_vs_exact"].items(),
                                                  key=lambda kv: int(kv[0]))))
    if f["counts"]:
        lines += ["", "counts", *_text_table(None, [[k, _num(v)] for k, v in f["counts"].items()])]
    if f["timings_s"]:
        rows = [[k, _sec(v)] for k, v in f["timings_s"].items()]
        lines += ["", "timings (s)", *_text_table(None, [*rows, ["total", _sec(_total(
            f["timings_s"]))]])]
    return "\n".join(lines) + "\n"


# -- formatting helpers --

def _json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _num(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _rate(x: Any) -> str:
    return "–" if x is None else f"{x:.4f}"


def _sec(x: Any) -> str:
    return "–" if x is None else f"{x:.1f}"


def _total(timings: dict) -> float:
    return sum(v for v in timings.values() if isinstance(v, int | float))


def _gate_word(gate: dict) -> str:
    if not gate["measured"]:
        return "not measured"
    return "PASSED" if gate["passed"] else "FAILED"


def _series(recall: dict) -> list[tuple[str, dict]]:
    """(label, {"k@budget": value}) of each measured recall series, ours first."""
    out = [("ours", recall["ours"])]
    if recall["exact_search"] and recall["exact_search"] != recall["ours"]:
        out.append(("exact search", recall["exact_search"]))
    if recall["baseline"]:
        out.append((recall["baseline"]["name"], recall["baseline"]["recall"]))
    return out


def _text_table(header: list[str] | None, rows: list[list[str]]) -> list[str]:
    body = ([header] if header else []) + rows
    widths = [max(len(str(r[i])) for r in body) for i in range(len(body[0]))]
    return ["  " + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in body]


def _split(name: str) -> tuple[int, int]:
    figure = Figure.parse(name)
    return figure.k, figure.budget


# -- HTML --

def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html(f: dict, plots: dict[str, bytes] | None) -> str:
    h, gate = f["headline"], f["gate"]
    word = _gate_word(gate)
    cls = {"PASSED": "pass", "FAILED": "fail"}.get(word, "")
    fp = h["scorer_fingerprint"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>curindex report {_e(f['version'] or '')}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Index version {_e(f['version'] or '?')}</h1>",
        _kv_table([
            ("created", f["created_at"]), ("items", _num(h["items"])),
            ("k_q (anchor queries)", _num(h["k_q"])), ("k_i (anchor items)", _num(h["k_i"])),
            ("scorer", f"{h['scorer'] or '?'}" + (f" ({fp})" if fp else "")),
            ("index", h["index"]),
            ("test queries", _num(gate["n_test"])),
        ]),
        f'<p>Quality gate: <span class="{cls}">{_e(word)}</span></p>',
    ]
    if gate["failures"]:
        parts.append("<ul>" + "".join(f'<li class="fail">{_e(x)}</li>'
                                      for x in gate["failures"]) + "</ul>")
    parts += ["<h2>Top-k-Recall@budget</h2>", _recall_html(f)]
    if plots is None:
        parts.append("<p><em>Plots are missing: matplotlib is not installed "
                     "(pip install 'curindex[report]').</em></p>")
    elif "recall.png" in plots:
        parts.append(_img(plots["recall.png"], "Top-k-Recall against budget"))
    parts += ["<h2>Factorization</h2>", _factorization_html(f["factorization"])]
    if plots and "singular_values.png" in plots:
        parts.append(_img(plots["singular_values.png"], "Singular values of U"))
    counts = dict(f["counts"])
    if h["shard_items_min"] is not None:
        counts["items per shard"] = f"{_num(h['shard_items_min'])} – {_num(h['shard_items_max'])}"
    parts += ["<h2>Counts</h2>", _kv_table([(k, _num(v)) for k, v in counts.items()])]
    timings = f["timings_s"]
    if timings:
        parts += ["<h2>Timings (s)</h2>",
                  _kv_table([(k, _sec(v)) for k, v in timings.items()]
                            + [("total", _sec(_total(timings)))])]
    config = f["manifest"].get("config")
    parts += [
        "<h2>Config and manifest</h2>",
        f"<details><summary>config</summary><pre>{_e(_json(config or {}))}</pre></details>",
        f"<details><summary>manifest</summary><pre>{_e(_json(f['manifest']))}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(_num(v))}</td></tr>'
                   for k, v in rows)
    return f"<table>{body}</table>"


def _recall_html(f: dict) -> str:
    series, floors = _series(f["recall"]), f["gate"]["min_recall"]
    names = {n for _, rec in series for n in rec} | set(floors)
    if not names:
        return "<p>Recall was not measured for this version.</p>"
    ks = sorted({_split(n)[0] for n in names})
    budgets = sorted({_split(n)[1] for n in names})
    head1 = '<tr><th class="l" rowspan="2">k \\ budget</th>' + "".join(
        f'<th colspan="{len(series)}">{b}</th>' for b in budgets) + "</tr>"
    head2 = "<tr>" + "".join(f"<th>{_e(label)}</th>" for _ in budgets
                             for label, _ in series) + "</tr>"
    rows = []
    for k in ks:
        cells = []
        for b in budgets:
            name = f"{k}@{b}"
            for i, (_, rec) in enumerate(series):
                floor = floors.get(name) if i == 0 else None
                if floor is None:
                    cells.append(f"<td>{_rate(rec.get(name))}</td>")
                else:  # our figure against its gate threshold
                    ok = rec.get(name) is not None and rec[name] >= floor
                    cells.append(f'<td class="gate {"pass" if ok else "fail"}" '
                                 f'title="threshold {floor:.4f}">{_rate(rec.get(name))}'
                                 f"<br><small>min {floor:.4f}</small></td>")
        rows.append(f'<tr><th class="l">{k}</th>{"".join(cells)}</tr>')
    out = f"<table>{head1}{head2}{''.join(rows)}</table>"
    out += "<p><small>Framed cells have a quality-gate threshold.</small></p>"
    ivx = f["recall"]["index_vs_exact"]
    if ivx:
        out += ("<p>Overlap of the index's candidates with exact inner-product search:</p>"
                + _kv_table([(f"budget {b}", _rate(v)) for b, v in
                             sorted(ivx.items(), key=lambda kv: int(kv[0]))]))
    return out


def _factorization_html(fac: dict) -> str:
    if not fac:
        return "<p>No factorization recorded.</p>"
    s = fac.get("singular_values") or []
    return _kv_table([
        ("rcond", fac.get("rcond")),
        ("effective rank", f"{_num(fac.get('effective_rank'))} of {len(s)}"),
        ("condition number (kept)", fac.get("condition_number_kept")),
        ("largest / smallest singular value",
         f"{_num(s[0])} / {_num(s[-1])}" if s else None),
        ("anchor selection (s)", fac.get("anchor_selection_s")),
    ]) + _tuning_html(fac.get("tuning"))


def _tuning_html(tuning: dict | None) -> str:
    """The tuned-inversion curve: mean recall on the tuning queries per candidate rcond."""
    if not tuning:
        return ""
    rows = [(f"rcond {key}" + (" (chosen)" if float(key) == tuning["chosen_rcond"] else ""),
             "too few singular values" if value is None else value)
            for key, value in tuning["curve"].items()]
    return (f"<h3>Tuned inversion</h3><p>rcond chosen by the {_e(tuning['objective'])} on "
            f"{tuning['n_tune']} tuning queries (held out of the recall reported above).</p>"
            + _kv_table(rows))


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


# -- plots --

def _plots(f: dict) -> dict[str, bytes] | None:
    """PNG plots, or None when matplotlib is not installed."""
    try:
        from matplotlib import style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as PlotFigure
    except ImportError:
        return None
    out = {}
    # The default style, not the user's matplotlibrc: the same manifest gives the same PNG.
    with style.context("default"):
        for name, draw in (("recall.png", _draw_recall),
                           ("singular_values.png", _draw_singular_values)):
            fig = PlotFigure(figsize=(7, 4.2), dpi=100)
            FigureCanvasAgg(fig)
            if draw(fig.add_subplot(), f):
                fig.tight_layout()
                buf = io.BytesIO()
                fig.savefig(buf, format="png", metadata={"Software": None})
                out[name] = buf.getvalue()
    return out


def _draw_recall(ax: Any, f: dict) -> bool:
    recall, floors = f["recall"], f["gate"]["min_recall"]
    if not recall["ours"]:
        return False
    base = recall["baseline"]
    lines = [(recall["ours"], "-o", "")]
    if base:
        lines.append((base["recall"], "--s", f" {base['name']}"))
    ks = sorted({_split(n)[0] for n in recall["ours"]})
    for i, k in enumerate(ks):
        color = f"C{i % 10}"
        for rec, fmt, suffix in lines:
            pts = sorted((_split(n)[1], v) for n, v in rec.items() if _split(n)[0] == k)
            if pts:
                ax.plot(*zip(*pts, strict=True), fmt, color=color, label=f"k={k}{suffix}")
        gates = [(_split(n)[1], v) for n, v in floors.items() if _split(n)[0] == k]
        if gates:
            ax.plot(*zip(*sorted(gates), strict=True), "v", color=color, markersize=9,
                    linestyle="none", label=f"k={k} min")
    ax.set_xticks(sorted({_split(n)[1] for n in [*recall["ours"], *floors]}))
    ax.set_xlabel("budget (exact-model calls per query)")
    ax.set_ylabel("Top-k-Recall")
    ax.set_title("Top-k-Recall@budget" + (f" (dashed: {base['name']})" if base else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return True


def _draw_singular_values(ax: Any, f: dict) -> bool:
    fac = f["factorization"]
    s = [x for x in fac.get("singular_values") or [] if x > 0]  # log scale: zeros left out
    if not s:
        return False
    rank, rcond = fac.get("effective_rank"), fac.get("rcond")
    kept = len(s) if rank is None else min(rank, len(s))
    ax.semilogy(range(1, kept + 1), s[:kept], ".-", color="C0", label="kept")
    if kept < len(s):
        ax.semilogy(range(kept + 1, len(s) + 1), s[kept:], ".-", color="0.6", label="dropped")
    if rcond is not None:
        ax.axhline(rcond * s[0], color="C3", linestyle=":", label=f"cutoff rcond={rcond:g} x max")
    if rank is not None:
        ax.axvline(rank + 0.5, color="C2", linestyle="--", label=f"effective rank {rank}")
    ax.set_xlabel("index")
    ax.set_ylabel("singular value")
    ax.set_title("Singular values of the intersection matrix U")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return True
