"""An input source as the build will read it, without Spark: which file, which format, which
columns, how many rows, and what is wrong with it.

``resolve_source`` is the one place that turns ``[items]`` / ``[queries]`` settings into a file
and its columns (``curindex.pipeline.corpus`` reads with Spark what it names). ``inspect_source``
reads only what is cheap: a Parquet dataset's footers (schema and row counts), and the first
``SAMPLE_ROWS`` rows of a Parquet dataset or of JSON lines (a JSON lines file's rows are counted
by its newlines). ``source_problems`` gives the verdicts the build's Spark read would reach on
those: a missing or unreadable file, no rows, a missing id or text column, a column of the
wrong type, and (in the sample) a null or empty id, an empty text or a duplicate id. A sample
proves a problem, never its absence: the build still checks every row.

``anchor_count_problems`` compares the row counts with what ``[anchors]`` asks for, naming
``[anchors] synthetic_queries`` when the query log is too small.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from curindex.config import BUILTIN_PREFIX, AnchorsConfig, InputConfig
from curindex.errors import InputError

BEIR_FILES = {"items": "corpus.jsonl", "queries": "queries.jsonl"}
BUILTIN_CORPORA = ("stdlib-docs",)
SAMPLE_ROWS = 1000  # rows read to check ids and texts (a sample: the build checks them all)
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")

# Column kinds: what a value of that column is to the build.
TEXT, BINARY, NESTED = "text", "binary", "nested"  # text: strings, numbers, bools (cast)


@dataclass(frozen=True)
class Source:
    """What the build reads for one role ("items" or "queries")."""

    role: str
    format: str  # parquet | jsonl | beir | builtin
    path: str  # the file or folder read (a BEIR folder's corpus.jsonl / queries.jsonl)
    id_column: str
    text_columns: tuple[str, ...]
    optional_columns: tuple[str, ...] = ()  # may be absent: a BEIR corpus's titles
    separator: str = ": "


@dataclass(frozen=True)
class Inspected:
    """What `inspect_source` read: the columns and their kinds, the row count, and a sample
    of (id, text) rows as the build would make them (None where a value is null)."""

    columns: dict[str, str]
    rows: int
    sample: list[tuple[Any, str]] = field(default_factory=list)


def resolve_source(cfg: InputConfig, *, role: str) -> Source:
    """The file, format and columns a source's settings name (format "auto": a folder holding
    the BEIR file of the role is BEIR, a ``.jsonl``/``.json`` (optionally ``.gz``) path JSON
    lines, anything else Parquet)."""
    path, fmt = cfg.path, cfg.format
    if path.startswith(BUILTIN_PREFIX):
        return Source(role, "builtin", path, "id", ("text",))
    if fmt == "auto":
        if os.path.isdir(path) and os.path.exists(os.path.join(path, BEIR_FILES[role])):
            fmt = "beir"
        elif path.endswith(JSON_SUFFIXES):
            fmt = "jsonl"
        else:
            fmt = "parquet"
    if fmt == "beir":
        text = ("title", "text") if role == "items" else ("text",)
        return Source(role, fmt, os.path.join(path, BEIR_FILES[role]), "_id", text,
                      optional_columns=("title",) if role == "items" else (),
                      separator=cfg.text_separator)
    return Source(role, fmt, path, cfg.id_column, tuple(cfg.text_columns),
                  separator=cfg.text_separator)


def is_remote(path: str) -> bool:
    """A URI (``s3a://``, ``hdfs://``, ...): Spark reads it; this machine may not."""
    return "://" in path and not path.startswith("file://")


def inspect_source(src: Source) -> Inspected:
    """Schema, row count and a sample of a local source (see the module docstring). Raises
    InputError naming the source when it is missing, unreadable or malformed."""
    if src.format == "builtin":
        from curindex.inputs import demo

        name = src.path[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_CORPORA:
            raise InputError(f"{src.role} {src.path!r}: unknown builtin corpus (known: "
                             f"{', '.join(BUILTIN_CORPORA)})")
        ids, texts = demo.items_table() if src.role == "items" else demo.queries_table()
        return Inspected({"id": TEXT, "text": TEXT}, len(ids),
                         list(zip(ids[:SAMPLE_ROWS], texts[:SAMPLE_ROWS], strict=True)))
    path = src.path.removeprefix("file://")
    if not os.path.exists(path):
        raise InputError(f"{src.role} {src.path!r}: file or folder not found")
    if src.format == "parquet":
        return _inspect_parquet(src, path)
    return _inspect_jsonl(src, path)


def _inspect_parquet(src: Source, path: str) -> Inspected:
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(path, format="parquet")  # footers only
        rows = dataset.count_rows()
        wanted = [c for c in (src.id_column, *src.text_columns) if c in dataset.schema.names]
        head = dataset.head(min(SAMPLE_ROWS, rows), columns=wanted).to_pylist() if rows else []
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{src.role} {src.path!r}: cannot read as parquet: "
                         f"{str(e).splitlines()[0][:300]}") from e
    columns = {f.name: _arrow_kind(f.type) for f in dataset.schema}
    return Inspected(columns, rows, _sample_rows(src, head))


def _arrow_kind(tp: Any) -> str:
    import pyarrow as pa

    if pa.types.is_binary(tp) or pa.types.is_large_binary(tp) or \
            pa.types.is_fixed_size_binary(tp):
        return BINARY
    if pa.types.is_nested(tp):
        return NESTED
    return TEXT


def _inspect_jsonl(src: Source, path: str) -> Inspected:
    columns: dict[str, str] = {}
    head: list[dict[str, Any]] = []
    rows = 0
    for name, number, line in _json_lines(src, path):
        rows += 1
        if len(head) >= SAMPLE_ROWS:
            continue  # counted, not parsed
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"{src.role} {src.path!r}: cannot read as {src.format}: not "
                             f"valid UTF-8 ({name}, line {number})") from None
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise InputError(f"{src.role} {src.path!r}: cannot read as {src.format}: a "
                             f"malformed record ({name}, line {number} is not one JSON "
                             "object)")
        for key, value in record.items():
            # Spark types a column by all its values: a nested value anywhere makes it nested
            if isinstance(value, list | dict):
                columns[key] = NESTED
            columns.setdefault(key, TEXT)
        head.append(record)
    return Inspected(columns, rows, _sample_rows(src, head))


def _json_lines(src: Source, path: str) -> Iterator[tuple[str, int, bytes]]:
    """(file name, line number, line) of every non-blank line of a JSON lines file, or of
    each data file of a folder (Spark skips names starting with "_" or ".")."""
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in sorted(os.listdir(path))
                 if not n.startswith(("_", ".")) and os.path.isfile(os.path.join(path, n))]
    else:
        files = [path]
    for f in files:
        try:
            with gzip.open(f, "rb") if f.endswith(".gz") else open(f, "rb") as lines:
                for number, line in enumerate(lines, 1):
                    if line.strip():
                        yield os.path.basename(f), number, line
        except (OSError, EOFError) as e:  # unreadable, or a truncated or corrupt gzip file
            raise InputError(f"{src.role} {src.path!r}: cannot read {f}: {e}") from e


def _sample_rows(src: Source, records: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    """(id, text) of sampled records, the text columns joined as the build joins them
    (null or blank parts skipped)."""
    out = []
    for r in records:
        parts = [str(r[c]) for c in src.text_columns
                 if r.get(c) is not None and str(r[c]).strip()]
        out.append((r.get(src.id_column), src.separator.join(parts)))
    return out


def source_problems(src: Source, seen: Inspected) -> list[tuple[str, str]]:
    """(settings key, problem) for each verdict of the build's read of `src` that `seen`
    already shows; keys are those of the role's section (``path``, ``id_column``,
    ``text_columns``)."""
    where = f"{src.role} {src.path!r}"
    if not seen.columns or seen.rows == 0:
        return [("path", f"{where}: no rows (empty {src.role})")]
    listed = ", ".join(seen.columns)
    out: list[tuple[str, str]] = []
    if src.id_column not in seen.columns:
        out.append(("id_column", f"{where}: missing column {src.id_column!r} (columns: "
                                 f"{listed})"))
    elif seen.columns[src.id_column] != TEXT:
        out.append(("id_column", f"{where}: id column {src.id_column!r} holds "
                                 f"{seen.columns[src.id_column]} values, not ids"))
    for c in src.text_columns:
        kind = seen.columns.get(c)
        if kind is None and c not in src.optional_columns:
            out.append(("text_columns", f"{where}: missing column {c!r} (columns: {listed})"))
        elif kind == BINARY:
            out.append(("text_columns", f"{where}: column {c!r} is binary, not UTF-8 text"))
        elif kind == NESTED:
            out.append(("text_columns", f"{where}: column {c!r} holds list or struct values, "
                                        "not text: join them into a string column first"))
    if out:
        return out
    return [("path", p) for p in _sample_problems(where, src.role, seen.sample)]


def _sample_problems(where: str, role: str, sample: list[tuple[Any, str]]) -> list[str]:
    out = []
    null_ids = sum(1 for i, _ in sample if i is None)
    if null_ids:
        out.append(f"{where}: rows have a null id ({null_ids} in the first {len(sample)})")
    empty_ids = sum(1 for i, _ in sample if i is not None and not str(i).strip())
    if empty_ids:
        out.append(f"{where}: rows have an empty id ({empty_ids} in the first {len(sample)})")
    empty = [repr(i) for i, t in sample if not t.strip()]
    if empty:
        out.append(f"{where}: rows have null or empty text (in the first {len(sample)}: "
                   f"{len(empty)}, ids {', '.join(empty[:5])})")
    ids = [str(i) for i, _ in sample if i is not None]
    dups = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if dups:
        out.append(f"{where}: duplicate ids (for example {', '.join(map(repr, dups[:5]))})")
    return out


def anchor_count_problems(a: AnchorsConfig, *, n_items: int | None, n_queries: int | None,
                          sparse: Any = None) -> list[tuple[str, str]]:
    """(``[anchors]`` key, problem) when the sources hold fewer rows than the anchors need:
    k_q - synthetic_queries + n_test queries (synthetic anchor queries are made from items;
    test queries always come from the query source) and k_i items. None: not counted."""
    out = []
    real = a.n_queries - a.synthetic_queries
    need = real + a.n_test
    if n_queries is not None and n_queries < need:
        synthetic = f" - {a.synthetic_queries} synthetic" if a.synthetic_queries else ""
        text = (f"queries: {n_queries} queries, fewer than k_q{synthetic} + n_test = "
                f"{a.n_queries}{synthetic} + {a.n_test} = {need}")
        more = a.n_queries + a.n_test - n_queries  # synthetic queries that would make up
        if a.n_test <= n_queries and more <= a.n_queries:
            text += (f": set [anchors] synthetic_queries = {more} to make that many anchor "
                     "queries from items' first sentences, or lower n_queries or n_test")
        else:
            text += (f": the {a.n_test} test queries must come from the query source; lower "
                     "[anchors] n_test (and use [anchors] synthetic_queries for anchor "
                     "queries made from items)")
        out.append(("[anchors] n_queries", text))
    if n_items is not None and n_items < a.n_items:
        out.append(("[anchors] n_items", f"items: {n_items} items, fewer than k_i = "
                                         f"{a.n_items} anchor items"))
    return out


def sparse_count_problems(a: AnchorsConfig, *, n_items: int | None, n_queries: int | None,
                          sparse: Any) -> list[tuple[str, str]]:
    """(key, problem) when the sources cannot give a sparse build (``[index] kind =
    "sparse"``) its n_test test queries and at least one training query. None: not
    counted."""
    out = []
    if n_queries is not None and n_queries < a.n_test:
        out.append(("[anchors] n_test", f"queries: {n_queries} queries, fewer than n_test = "
                                        f"{a.n_test} test queries"))
    elif (n_queries is not None and n_items is not None and sparse.synthetic_queries == 0
          and min(sparse.log_queries, n_queries - a.n_test) < 1):
        out.append(("[sparse] synthetic_queries",
                    f"queries: all {n_queries} queries are test queries and no synthetic "
                    "query is made: set [sparse] synthetic_queries to train on queries made "
                    "from items' first sentences"))
    return out
