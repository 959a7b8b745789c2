"""Reading an input source without Spark, for a plan or a check: its row count, and a few
texts spread over it (Parquet through pyarrow, reading only the row groups it needs; JSON lines
by line; the builtin demo corpus)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from curindex.config import BUILTIN_PREFIX, InputConfig
from curindex.errors import InputError

JSONL_SCAN = 20  # a JSON lines sample spreads over the first JSONL_SCAN x n lines


def count_rows(cfg: InputConfig, *, role: str) -> int:
    """Rows of an input source, without Spark (Parquet: its metadata; JSON lines: its lines)."""
    if cfg.path.startswith(BUILTIN_PREFIX):
        from curindex.inputs import demo

        return len((demo.items_table() if role == "items" else demo.queries_table())[0])
    path = _source_path(cfg, role)
    if path.suffix in (".jsonl", ".json") or path.name.endswith((".jsonl.gz", ".json.gz")):
        with _open_text(path) as f:
            return sum(1 for line in f if line.strip())
    import pyarrow.dataset as ds

    try:
        return ds.dataset(str(path), format="parquet").count_rows()
    except (OSError, ValueError) as e:
        raise InputError(f"{role} {str(path)!r}: cannot count rows: {e}") from e


def sample_texts(cfg: InputConfig, *, role: str, n: int) -> list[str]:
    """`n` texts spread over a source (its text columns joined as the build joins them): rows
    evenly spaced over a Parquet dataset or the built-in corpus, every k-th of the first
    `JSONL_SCAN` x n lines of a JSON lines file. A source's first rows are often not typical
    (sorted by source, or by length), and the plan's time scales with their length."""
    if cfg.path.startswith(BUILTIN_PREFIX):
        from curindex.inputs import demo

        texts = (demo.items_table() if role == "items" else demo.queries_table())[1]
        return [texts[i] for i in _spread(len(texts), n)]
    path = _source_path(cfg, role)
    beir = (cfg.format == "beir" or path.name in ("corpus.jsonl", "queries.jsonl"))
    columns = (["title", "text"] if role == "items" else ["text"]) if beir else \
        list(cfg.text_columns)
    rows: list[dict[str, Any]] = []
    if path.suffix in (".jsonl", ".json") or path.name.endswith(".gz"):
        with _open_text(path) as f:
            for line in f:
                if line.strip():
                    rows.append(json.loads(line))
                if len(rows) >= JSONL_SCAN * n:
                    break
        rows = [rows[i] for i in _spread(len(rows), n)]
    else:
        import pyarrow.dataset as ds

        dataset = ds.dataset(str(path), format="parquet")
        wanted = [c for c in columns if c in dataset.schema.names]
        rows = _parquet_rows(dataset, _spread(dataset.count_rows(), n), wanted)
    texts = [cfg.text_separator.join(str(r[c]) for c in columns if r.get(c)) for r in rows]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError(f"{role} {str(path)!r}: no text to sample")
    return texts


def _parquet_rows(dataset: Any, picks: list[int], columns: list[str]) -> list[dict[str, Any]]:
    """Rows `picks` (sorted) of a Parquet dataset, reading only the row groups that hold
    them (a dataset's `take` reads every batch up to the last row asked for)."""
    rows: list[dict[str, Any]] = []
    start, todo = 0, list(picks)
    for fragment in dataset.get_fragments():
        fragment.ensure_complete_metadata()
        for group in fragment.row_groups:
            end = start + group.num_rows
            inside = [i - start for i in todo if start <= i < end]
            if inside:
                table = fragment.subset(row_group_ids=[group.id]).to_table(columns=columns)
                rows += table.take(inside).to_pylist()
            start = end
    return rows


def _spread(total: int, n: int) -> list[int]:
    """Up to `n` distinct row numbers evenly spaced over `total` rows."""
    return sorted(set(np.linspace(0, total - 1, min(n, total)).round().astype(int).tolist())) \
        if total else []


def _source_path(cfg: InputConfig, role: str) -> Path:
    path = Path(cfg.path)
    if path.is_dir() and (path / ("corpus.jsonl" if role == "items" else
                                  "queries.jsonl")).exists() and cfg.format in ("auto", "beir"):
        path = path / ("corpus.jsonl" if role == "items" else "queries.jsonl")
    if not path.exists():
        raise InputError(f"{role} {cfg.path!r}: file or folder not found")
    return path


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")
