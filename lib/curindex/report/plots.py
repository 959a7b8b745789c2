"""The report's PNG plots, drawn from the report's figures (``content.report_figures``) with
matplotlib's object API (no pyplot state): recall against budget per k, the singular values of
U, the stage times and the score stage's throughput.

The same figures give the same bytes: the default style rather than the user's matplotlibrc,
and no software or date metadata in the PNG. matplotlib is optional: `plots` returns None
without it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from curindex.report.series import budgets_of, recall_panels

RECALL_PNG = "recall.png"
SINGULAR_PNG = "singular_values.png"
STAGES_PNG = "stage_times.png"
THROUGHPUT_PNG = "score_throughput.png"

Draw = Callable[[Any, dict], bool]  # (matplotlib Figure, report figures) -> drew anything


def plots(f: dict[str, Any]) -> dict[str, bytes] | None:
    """{file name: PNG bytes} of every plot the figures have data for; None when matplotlib
    is not installed."""
    try:
        from matplotlib import style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as PlotFigure
    except ImportError:
        return None
    out = {}
    with style.context("default"):
        for name, draw, size in ((RECALL_PNG, _draw_recall, _recall_size(f)),
                                 (SINGULAR_PNG, _draw_singular_values, (7.0, 4.2)),
                                 (STAGES_PNG, _draw_stages, (7.0, 3.2)),
                                 (THROUGHPUT_PNG, _draw_throughput, (7.0, 3.6))):
            fig = PlotFigure(figsize=size, dpi=100)
            FigureCanvasAgg(fig)
            if draw(fig, f):
                buf = io.BytesIO()
                fig.savefig(buf, format="png", metadata={"Software": None})
                out[name] = buf.getvalue()
    return out


def _recall_size(f: dict) -> tuple[float, float]:
    n = max(len(recall_panels(f["methods"], f["gate"]["min_recall"])), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    return 4.3 * cols, 3.4 * rows + 0.7  # room for the legend below the panels


def _draw_recall(fig: Any, f: dict) -> bool:
    panels = recall_panels(f["methods"], f["gate"]["min_recall"])
    if not panels:
        return False
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    budgets = budgets_of(panels)
    labels = list(dict.fromkeys(line.label for p in panels for line in p.lines))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    handles: dict[str, Any] = {}
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for line in panel.lines:
            # The served line thick and underneath, so a method close to it still shows.
            style = dict(linewidth=4, marker="o", markersize=7, zorder=2, alpha=0.85) \
                if line.served else dict(linewidth=1.3, marker=".", markersize=7, zorder=3,
                                         linestyle="--" if line.baseline else "-")
            (h,) = ax.plot(*zip(*line.points, strict=True), color=colors[line.label],
                           label=line.label, **style)
            handles.setdefault(line.label, h)
        if panel.thresholds:
            (h,) = ax.plot(*zip(*panel.thresholds, strict=True), "v", color="black",
                           markersize=8, linestyle="none", label="gate threshold", zorder=4)
            handles.setdefault("gate threshold", h)
        ax.set_xscale("log")
        ax.set_xlim(budgets[0] / 1.3, budgets[-1] * 1.3)  # the same budgets on every panel
        ax.set_xticks(budgets, labels=[str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_title(f"Top-{panel.k}-Recall", fontsize=10)
        ax.set_xlabel("budget (exact-model calls per query)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
    served = f["search"]["served"]
    fig.suptitle(f"Recall against budget; served: {served['name']} at budget "
                 f"{served['budget']} (thick line)", fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.45 / fig.get_figheight(), 1, 1))
    return True


def _draw_singular_values(fig: Any, f: dict) -> bool:
    fac = f["factorization"]
    s = [x for x in fac.get("singular_values") or [] if x > 0]  # log scale: zeros left out
    if not s:
        return False
    ax = fig.add_subplot()
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
    fig.tight_layout()
    return True


def _draw_stages(fig: Any, f: dict) -> bool:
    timings = f["timings_s"]
    if not timings:
        return False
    ax = fig.add_subplot()
    names = list(timings)[::-1]  # the first stage on top
    values = [timings[n] for n in names]
    bars = ax.barh(names, values, color="C0")
    ax.bar_label(bars, labels=[f"{v:.1f} s" for v in values], padding=3, fontsize=8)
    ax.set_xlim(0, max(max(values), 1e-9) * 1.18)
    ax.set_xlabel("seconds")
    ax.set_title(f"Stage times (total {f['timings_total_s']:.1f} s)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return True


def _draw_throughput(fig: Any, f: dict) -> bool:
    tp = f["score_throughput"]
    per_item, intervals = tp["pairs_per_item"], tp["intervals"]
    if not intervals:
        return False
    ax = fig.add_subplot()
    # Consecutive intervals: each starts where the one before ended (series.throughput).
    xs = [intervals[0]["start_s"], *(i["end_s"] for i in intervals)]
    ys = [i["items_per_s"] for i in intervals]
    ax.stairs(ys, xs, color="C0", linewidth=1.8, baseline=None)
    ax.set_ylim(0, max(ys) * 1.15 if max(ys) > 0 else 1)
    ax.set_xlabel("seconds since the score stage began")
    ax.set_ylabel("items / s")
    if per_item:
        right = ax.secondary_yaxis("right", functions=(lambda x: x * per_item,
                                                       lambda x: x / per_item))
        right.set_ylabel(f"pairs / s ({per_item} per item)")
    ax.set_title("Score stage throughput")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return True
