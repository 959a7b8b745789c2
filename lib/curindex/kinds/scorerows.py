"""Score rows in Arrow: one item per row, its exact scores over the queries scored against every
item (a dense build: anchor queries first, then test queries; a sparse build: the test queries
or none) as a ``list<float32>``, and its bi-encoder embedding. The score stage writes them, every
later stage reads them; this module is the one place that encodes and decodes them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# The score chunks' rows, in Arrow and as Spark's DDL string. ``bi`` (the item's bi-encoder
# embedding, for the bi-encoder search methods) is present when the build computes it; Spark
# reads it as null from files without it.
ARROW_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("shard", pa.int32()), ("text", pa.string()),
    ("truncated", pa.bool_()), ("scores", pa.list_(pa.float32())),
])
BI_FIELD = pa.field("bi", pa.list_(pa.float32()))
SPARK_SCHEMA = ("item_id string, shard int, text string, truncated boolean, scores array<float>, "
                "bi array<float>")


def arrow_schema(*, bi: bool) -> pa.Schema:
    return ARROW_SCHEMA.append(BI_FIELD) if bi else ARROW_SCHEMA


def matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The rows of a list<float> column as a matrix [n, width] float32 (every row the same
    width, as score rows are)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    values = column.flatten().to_numpy(zero_copy_only=False)
    if values.size == 0:  # rows of no scores (a sparse build scores no query against all)
        return np.zeros((n, 0), dtype=np.float32)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(n, -1)


def list_array(rows: np.ndarray) -> pa.ListArray:
    """A matrix [n, width] as an Arrow list<float32> array, one list per row."""
    flat = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1)
    width = rows.shape[1] if rows.ndim == 2 else 0
    offsets = pa.array(np.arange(0, flat.size + 1, max(1, width), dtype=np.int32)
                       if width else np.zeros(rows.shape[0] + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat, type=pa.float32()))
