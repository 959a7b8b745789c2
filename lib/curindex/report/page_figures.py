"""The page's figure sections: every method's recall (one table per k, as the plot has one
panel per k), shard sizes, the score stage's throughput, stage times, the factorization."""

from __future__ import annotations

from typing import Any

from curindex.quality.figures import Figure
from curindex.report.fmt import DASH, num, per_s, rate, sec, size
from curindex.report.htmlkit import cell, e, head, kv_table, plot, table
from curindex.report.plots import RECALL_PNG, SINGULAR_PNG, STAGES_PNG, THROUGHPUT_PNG
from curindex.report.series import line_label


def recall_html(f: dict[str, Any], plots: dict[str, bytes] | None) -> str:
    """Per k, a table of every method row (the served one marked) against the budgets, the
    served search's thresholded figures framed; the plot; the index's overlap with exact
    search."""
    rows, floors = f["methods"], f["gate"]["min_recall"]
    figures = {Figure.parse(n) for r in rows for n in r["recall"]} | {
        Figure.parse(n) for n in floors}
    if not figures:
        return "<p>Recall was not measured for this version.</p>"
    out = [f"<p>On {e(f['gate']['n_test'])} reporting test queries; the served search's row "
           "is highlighted, and framed cells have a quality-gate threshold.</p>"]
    for k in sorted({fig.k for fig in figures}):
        budgets = sorted({fig.budget for fig in figures if fig.k == k})
        body, classes = [], []
        for r in rows:
            cells = [_recall_cell(r, Figure(b, k), floors) for b in budgets]
            if r["served"] or any(str(Figure(b, k)) in r["recall"] for b in budgets):
                body.append([head(line_label(r)), *cells])
                classes.append("served" if r["served"] else "")
        out += [f"<h3>Top-{k}-Recall</h3>",
                table(["method \\ budget", *map(str, budgets)], body, row_classes=classes)]
    out.append(plot(plots, RECALL_PNG, "Top-k-Recall against budget, every method"))
    ivx = f["recall"]["index_vs_exact"]
    if ivx:
        out.append("<p>Overlap of the index's candidates with exact inner-product search "
                   "(plain CUR):</p>" + kv_table(
                       [(f"budget {b}", rate(v))
                        for b, v in sorted(ivx.items(), key=lambda kv: int(kv[0]))]))
    return "".join(out)


def _recall_cell(row: dict[str, Any], fig: Figure, floors: dict[str, float]) -> str:
    value = row["recall"].get(str(fig))
    floor = floors.get(str(fig)) if row["served"] else None
    if floor is None:
        return cell(rate(value))
    ok = value is not None and value >= floor
    return (f'<td class="gate {"pass" if ok else "fail"}" title="threshold {floor:.4f}">'
            f"{rate(value)}<br><small>min {floor:.4f}</small></td>")


def shards_html(shards: list[dict[str, Any]]) -> str:
    """Bytes per shard and per file kind, from the manifest's file list."""
    if not shards:
        return "<p>No shards.</p>"
    kinds = [k for k in ("vectors", "ids", "extra", "h", "bi", "scores")
             if any(k in s["file_bytes"] for s in shards)]
    rows = [[head(s["shard"]), cell(num(s["n_items"])),
             *(cell(num(s["file_bytes"].get(k))) for k in kinds),
             cell(size(s["bytes"])), cell(", ".join(s["shared_from"]) or DASH)]
            for s in shards]
    out = table(["shard", "items", *(f"{k} bytes" for k in kinds), "total bytes",
                 "shared from"], rows)
    if any(s["bytes"] is None for s in shards):
        out += ("<p><small>A shard without a total has a file whose size this manifest does "
                "not record.</small></p>")
    return out


def throughput_html(tp: dict[str, Any], plots: dict[str, bytes] | None) -> str:
    if not tp["intervals"]:
        return "<p>No progress samples recorded for the score stage.</p>"
    last = tp["intervals"][-1]
    return kv_table([
        ("pairs per item (anchor queries + test queries)", tp["pairs_per_item"]),
        ("items scored by the last sample", f"{num(tp['samples'][-1]['items'])} at "
                                            f"{sec(last['end_s'])} s"),
        ("mean items / s", per_s(tp["mean_items_per_s"])),
        ("mean pairs / s", per_s(tp["mean_pairs_per_s"])),
        ("slowest / fastest interval (items / s)",
         f"{per_s(min(i['items_per_s'] for i in tp['intervals']))} / "
         f"{per_s(max(i['items_per_s'] for i in tp['intervals']))}"),
    ]) + plot(plots, THROUGHPUT_PNG, "Score stage throughput over time")


def timings_html(f: dict[str, Any], plots: dict[str, bytes] | None) -> str:
    timings = f["timings_s"]
    if not timings:
        return "<p>No stage times recorded.</p>"
    return (kv_table([*((f"{k} (s)", sec(v)) for k, v in timings.items()),
                      ("total (s)", sec(f["timings_total_s"]))])
            + plot(plots, STAGES_PNG, "Stage times"))


def factorization_html(fac: dict[str, Any] | None, plots: dict[str, bytes] | None) -> str:
    if not fac:
        return "<p>No factorization recorded.</p>"
    s = fac.get("singular_values") or []
    return kv_table([
        ("rcond", fac.get("rcond")),
        ("effective rank", f"{num(fac.get('effective_rank'))} of {len(s)}"),
        ("condition number (kept)", fac.get("condition_number_kept")),
        ("largest / smallest singular value",
         f"{num(s[0])} / {num(s[-1])}" if s else None),
        ("anchor selection (s)", fac.get("anchor_selection_s")),
        *([("G from base version", fac["from_base"])] if fac.get("from_base") else []),
    ]) + _tuning_html(fac.get("tuning")) + plot(plots, SINGULAR_PNG, "Singular values of U")


def _tuning_html(tuning: dict | None) -> str:
    """The tuned-inversion curve: mean recall on the tuning queries per candidate rcond."""
    if not tuning:
        return ""
    rows = [(f"rcond {key}" + (" (chosen)" if float(key) == tuning["chosen_rcond"] else ""),
             "too few singular values" if value is None else value)
            for key, value in tuning["curve"].items()]
    return (f"<h3>Tuned inversion</h3><p>rcond chosen by the {e(tuning['objective'])} on "
            f"{e(tuning['n_tune'])} tuning queries (held out of the recall reported above)."
            "</p>" + kv_table(rows))
