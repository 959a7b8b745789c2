"""What the `curindex` command writes: results on stdout (a text table, or with ``-o json`` one
JSON document and nothing else), progress and logs on stderr.

Ids and texts come from the corpus and the store, so they may hold anything: a newline, a tab,
a NUL or a terminal escape would break a table or take over the terminal. Text output shows
such a string escaped (``safe``); JSON output escapes every control character anyway.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def safe(text: object) -> str:
    """`text` as it may be printed: unchanged when every character is printable, else in
    Python's repr form (quoted, ``\\n``, ``\\t``, ``\\x00``, ``\\x1b`` escaped), so a
    non-printable character can neither break a table nor reach the terminal."""
    s = str(text)
    return s if s.isprintable() else repr(s)


def escaped(text: object) -> str:
    """`text` with each non-printable character but the newline written as its escape
    (``\\x1b``, ``\\u2028``): for messages, which quote what a store or an input held and
    may span lines."""
    return "".join(c if c.isprintable() or c == "\n" else
                   c.encode("unicode_escape").decode("ascii") for c in str(text))


def excerpt(text: str, width: int) -> str:
    """One printable line of at most `width` characters (at least 20) from `text`."""
    one_line = " ".join(safe(word) for word in str(text).split())
    return textwrap.shorten(one_line, width=max(20, width), placeholder="...")


def table(rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """Rows aligned in columns (the cells made safe); columns in `right` are right-aligned."""
    cells = [[safe(c) for c in row] for row in rows]
    if not cells:
        return []
    widths = [max(len(row[i]) for row in cells if i < len(row))
              for i in range(max(len(row) for row in cells))]
    return ["  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                      for i, c in enumerate(row)).rstrip() for row in cells]


def emit_json(doc: Any) -> None:
    """One JSON document on stdout (ASCII only: every control and non-ASCII character is
    escaped, so it cannot reach a terminal raw)."""
    sys.stdout.write(json.dumps(doc, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, tuples: plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def progress(message: str) -> None:
    """One progress line on stderr (never stdout, which carries the results)."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def timed(message: str, done: str = "done") -> Iterator[None]:
    """``message ...`` on stderr before the block, ``<done> in 2.1 s`` after it."""
    progress(f"{message} ...")
    t0 = time.perf_counter()
    yield
    progress(f"{done} in {time.perf_counter() - t0:.1f} s")


def size(n: int) -> str:
    """A byte count for people: 512 B, 2.0 KiB, 3.5 MiB, 1.2 GiB."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"
