"""The data each plot draws, as plain values: the recall curves per k and the score stage's
throughput per interval. Pure (no matplotlib), so tests read what a plot shows without
decoding a PNG, and the plot draws exactly these points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from curindex.quality.figures import Figure


class Line(NamedTuple):
    """One curve of a recall panel: (budget, recall) points sorted by budget."""

    label: str
    points: tuple[tuple[int, float], ...]
    served: bool
    baseline: bool


class Panel(NamedTuple):
    """Top-k-Recall against budget for one k: a line per method (and the baseline), and the
    gate's thresholds on the served search at this k as (budget, threshold) points."""

    k: int
    lines: tuple[Line, ...]
    thresholds: tuple[tuple[int, float], ...]


class Interval(NamedTuple):
    """The score stage between two progress samples (seconds since the stage began)."""

    start_s: float
    end_s: float
    items: int
    items_per_s: float
    pairs_per_s: float


def recall_panels(rows: Sequence[Mapping[str, Any]], min_recall: Mapping[str, float]
                  ) -> list[Panel]:
    """One panel per k measured, each with one line per method row and baseline row that has
    a figure at that k (exact-search reference rows are tables-only).

    rows: the report's "methods" rows ({"name", "kind", "served", "baseline", "recall"})."""
    plotted = [r for r in rows if r["kind"] in ("method", "baseline")]
    parsed = [(r, [(Figure.parse(n), v) for n, v in r["recall"].items()]) for r in plotted]
    floors = [(Figure.parse(n), v) for n, v in min_recall.items()]
    ks = sorted({f.k for _, figs in parsed for f, _ in figs})
    panels = []
    for k in ks:
        lines = []
        for row, figs in parsed:
            points = tuple(sorted((f.budget, v) for f, v in figs if f.k == k))
            if points:
                lines.append(Line(line_label(row), points, bool(row["served"]),
                                  bool(row["baseline"])))
        thresholds = tuple(sorted((f.budget, v) for f, v in floors if f.k == k))
        panels.append(Panel(k, tuple(lines), thresholds))
    return panels


def line_label(row: Mapping[str, Any]) -> str:
    """A row's name as the legend and the tables show it."""
    label = str(row["name"])
    if row["kind"] == "method" and row["baseline"]:
        label += " = bi-encoder baseline"
    if row["served"]:
        label += " (served)"
    return label


def budgets_of(panels: Sequence[Panel]) -> list[int]:
    """Every budget a panel has a point or a threshold at, sorted."""
    return sorted({b for p in panels for line in p.lines for b, _ in line.points}
                  | {b for p in panels for b, _ in p.thresholds})


def throughput(samples: Sequence[tuple[float, int]], pairs_per_item: int) -> list[Interval]:
    """The rate between consecutive progress samples, the first from the stage's start (0 s,
    0 items). Samples out of time order are taken sorted; an interval of no time is left out
    (its rate is undefined)."""
    out, t0, n0 = [], 0.0, 0
    for t, n in sorted(samples):
        if t > t0:
            items_per_s = (n - n0) / (t - t0)
            out.append(Interval(t0, t, n - n0, items_per_s, items_per_s * pairs_per_item))
            t0, n0 = t, n
    return out
