"""Number and text formatting shared by the page and the terminal table: one way to write a
recall, a delta, a byte count, so both say the same thing."""

from __future__ import annotations

import json
from typing import Any

DASH = "–"


def to_json(doc: Any) -> str:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def num(x: Any) -> str:
    """An int with thousands separators, a float to 6 significant digits, else str."""
    if x is None:
        return DASH
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def rate(x: float | None) -> str:
    """A recall (or any share) to 4 decimals."""
    return DASH if x is None else f"{x:.4f}"


def signed_rate(x: float | None) -> str:
    return DASH if x is None else f"{x:+.4f}"


def signed_int(x: int | None) -> str:
    return DASH if x is None else f"{x:+,}"


def sec(x: float | None) -> str:
    return DASH if x is None else f"{x:.1f}"


def per_s(x: float | None) -> str:
    """A throughput: one decimal under 1,000, whole numbers with separators above."""
    if x is None:
        return DASH
    return f"{x:.1f}" if abs(x) < 1000 else f"{x:,.0f}"


def size(x: int | None) -> str:
    """Bytes, exact and in binary units: "24,000,000 (22.9 MiB)"."""
    if x is None:
        return DASH
    return f"{x:,} ({human_bytes(x)})"


def signed_size(x: int | None) -> str:
    if x is None:
        return DASH
    return f"{x:+,} ({'-' if x < 0 else '+'}{human_bytes(abs(x))})"


def human_bytes(x: int) -> str:
    value, unit = float(x), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{x} B" if unit == "B" else f"{value:.1f} {unit}"


def text_table(header: list[str] | None, rows: list[list[str]]) -> list[str]:
    """Aligned plain-text rows: the first column left-aligned, the others right-aligned."""
    body = ([header] if header else []) + rows
    if not body:
        return []
    widths = [max(len(str(r[i])) for r in body) for i in range(len(body[0]))]
    return ["  " + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in body]
