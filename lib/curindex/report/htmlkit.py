"""Small HTML builders for the report page. Every value that reaches the page goes through
`e` (manifest strings are data, never markup: a planted ``<script>`` must show as text)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

from curindex.report.fmt import num

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:64em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.pass{color:#176f2c;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.none{color:#8a5a00;font-weight:bold}.up{color:#176f2c}.down{color:#b00020}
td.gate{outline:2px solid #555;outline-offset:-2px}td.gate.fail{background:#fde4e7}
td.gate.pass{background:#e3f4e6}tr.served td,tr.served th{background:#fff6d6;font-weight:bold}
section.compare{border:2px solid #345;padding:0 1em .6em;margin:1em 0}
small{color:#666}img{max-width:100%}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:12px}
"""


def e(x: Any) -> str:
    """Escaped text of any value (quotes too: values also land in attributes)."""
    return html.escape(str(x), quote=True)


def kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    """A two-column table of (label, value); values formatted by `fmt.num` and escaped."""
    body = "".join(f'<tr><th class="l">{e(k)}</th><td class="l">{e(num(v))}</td></tr>'
                   for k, v in rows)
    return f"<table>{body}</table>"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
          row_classes: Sequence[str] | None = None) -> str:
    """A table of already-built cells (`cell` or `head`); header labels are escaped here."""
    head = "<tr>" + "".join(f'<th class="l">{e(h)}</th>' if i == 0 else f"<th>{e(h)}</th>"
                            for i, h in enumerate(header)) + "</tr>"
    classes = row_classes or [""] * len(rows)
    body = "".join((f'<tr class="{c}">' if c else "<tr>") + "".join(r) + "</tr>"
                   for r, c in zip(rows, classes, strict=True))
    return f"<table>{head}{body}</table>"


def cell(text: Any, cls: str = "", title: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{e(title)}"' if title else "")
    return f"<td{attrs}>{e(text)}</td>"


def head(text: Any) -> str:
    return f'<th class="l">{e(text)}</th>'


def img(png: bytes, alt: str) -> str:
    """An inline PNG: the page stays one self-contained file."""
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{e(alt)}" src="data:image/png;base64,{data}"></p>'


def plot(plots: dict[str, bytes] | None, name: str, alt: str) -> str:
    """The plot `name` when drawn; nothing when there was no data for it (matplotlib missing
    is said once, at the top of the page)."""
    return img(plots[name], alt) if plots and name in plots else ""


def signed_class(x: float | None) -> str:
    """"up" or "down" for a delta (a colour on the page), "" for none or zero."""
    if not x:
        return ""
    return "up" if x > 0 else "down"
