"""Read an item corpus or a query source into a DataFrame ``(id: string, text: string)`` and
validate it.

Sources: Parquet (a file or a folder), JSON lines, a BEIR folder (``corpus.jsonl`` for items,
``queries.jsonl`` for queries; ``_id``, ``title``, ``text``), or ``builtin:stdlib-docs`` (the
demo corpus, see ``curindex.inputs.demo``). Texts of several columns are joined with the configured
separator, skipping null or blank parts (blank: only whitespace, Unicode's included).

Validation (``check_texts``) raises InputError naming the source and the problem for: an empty
table, a null id, a blank id, a null or blank text, a duplicate id, and text that was not valid
UTF-8 (Spark decodes invalid bytes as U+FFFD, which is what is detected). Nothing is repaired
silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow.fs as pafs
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BinaryType, MapType, StringType, StructType
from pyspark.sql.utils import AnalysisException

from curindex.config import BUILTIN_PREFIX, InputConfig
from curindex.errors import InputError
from curindex.inputs.sources import resolve_source

_EXAMPLES = 5


@dataclass(frozen=True)
class TextStats:
    rows: int
    max_chars: int
    mean_chars: float


def read_texts(spark: SparkSession, cfg: InputConfig, *, role: str) -> DataFrame:
    """The source as a DataFrame (id string, text string); `role` is "items" or "queries"."""
    if cfg.path.startswith(BUILTIN_PREFIX):
        return _builtin(spark, cfg.path, role)
    fmt, path, id_col, text_cols = _resolve(cfg, role)
    if "://" not in path and not os.path.exists(path):
        raise InputError(f"{role} {path!r}: file or folder not found")
    with read_errors(role, path, fmt):
        if fmt == "parquet":
            df = spark.read.parquet(path)
        else:
            # FAILFAST: a malformed line is an error, not a silently dropped row.
            df = spark.read.option("mode", "FAILFAST").json(path)
        columns = df.columns
    if not columns:  # Spark infers no schema from a JSON file without records
        raise InputError(f"{role} {path!r}: no rows (empty {role})")
    missing = [c for c in [id_col, *text_cols] if c not in columns]
    if fmt == "beir" and "title" in missing and role == "items":
        text_cols = [c for c in text_cols if c != "title"]  # BEIR titles are optional
        missing.remove("title")
    if missing:
        raise InputError(
            f"{role} {path!r}: missing column {missing[0]!r} (columns: {', '.join(columns)})"
        )
    fields = {f.name: f.dataType for f in df.schema.fields}
    for c in text_cols:
        if isinstance(fields[c], BinaryType):
            raise InputError(f"{role} {path!r}: column {c!r} is binary, not UTF-8 text")
        if isinstance(fields[c], ArrayType | MapType | StructType):
            # Cast to a string it would read "[a, b, ...]", which is nobody's text.
            raise InputError(f"{role} {path!r}: column {c!r} holds {fields[c].simpleString()} "
                             "values, not text: join them into a string column first")
    if isinstance(fields[id_col], ArrayType | MapType | StructType | BinaryType):
        raise InputError(f"{role} {path!r}: id column {id_col!r} holds "
                         f"{fields[id_col].simpleString()} values, not ids")
    parts = [F.when(~blank(F.col(c).cast(StringType())), F.col(c).cast(StringType()))
             for c in text_cols]
    text = F.concat_ws(cfg.text_separator, *parts) if len(parts) > 1 else parts[0]
    return df.select(F.col(id_col).cast(StringType()).alias("id"), text.alias("text"))


def blank(column: Column) -> Column:
    """Whether a string column holds only whitespace, Unicode's included (an id of U+3000
    is as empty as one of spaces; Spark's `trim` strips ASCII spaces only)."""
    return column.rlike(r"^\p{IsWhite_Space}*$")


def input_digest(cfg: InputConfig, *, role: str) -> str:
    """A digest of what a source holds now, without reading its rows: for every file of it
    (a folder is walked), the path, size and modification time; for the builtin corpus, its
    texts. A resumed build compares it with the digest its earlier stages ran with, so a
    corpus changed in between starts the build over instead of mixing old and new items."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    if cfg.path.startswith(BUILTIN_PREFIX):
        from curindex.inputs import demo

        ids, texts = demo.items_table() if role == "items" else demo.queries_table()
        h.update(json.dumps([ids, texts]).encode())
        return h.hexdigest()
    _, path, _, _ = _resolve(cfg, role)
    from curindex.pipeline.chunks import open_dir

    try:
        fs, root = open_dir(path)
        info = fs.get_file_info(root)
        infos = [info] if info.type != pafs.FileType.Directory else sorted(
            fs.get_file_info(pafs.FileSelector(root, recursive=True)), key=lambda i: i.path)
    except OSError as e:
        raise InputError(f"{role} {path!r}: cannot look at it: {e}") from e
    for i in infos:
        h.update(json.dumps([i.path, int(i.type), i.size, i.mtime_ns]).encode())
    return h.hexdigest()


@contextmanager
def read_errors(role: str, source: str, fmt: str = "") -> Iterator[None]:
    """Report a Spark read failure as an InputError naming the source and the cause."""
    try:
        yield
    except (AnalysisException, Py4JJavaError, PySparkException) as e:
        text = str(e)
        if "Invalid UTF-8" in text or "MalformedInputException" in text:
            cause = "not valid UTF-8 (the file holds bytes that are not UTF-8 text)"
        elif "Malformed records" in text or "MALFORMED_RECORD" in text:
            cause = "a malformed record (a line that is not one JSON object)"
        else:
            cause = text.strip().splitlines()[0][:300] if text.strip() else type(e).__name__
        raise InputError(f"{role} {source!r}: cannot read{' as ' + fmt if fmt else ''}: "
                         f"{cause}") from e


def _resolve(cfg: InputConfig, role: str) -> tuple[str, str, str, list[str]]:
    """(format, path, id column, text columns) after format auto-detection."""
    src = resolve_source(cfg, role=role)
    return src.format, src.path, src.id_column, list(src.text_columns)


def _builtin(spark: SparkSession, path: str, role: str) -> DataFrame:
    from curindex.inputs import demo

    name = path[len(BUILTIN_PREFIX):]
    if name != "stdlib-docs":
        raise InputError(f"{role} {path!r}: unknown builtin corpus (known: stdlib-docs)")
    ids, texts = demo.items_table() if role == "items" else demo.queries_table()
    return spark.createDataFrame(list(zip(ids, texts, strict=True)), "id string, text string")


def check_texts(df: DataFrame, *, role: str, source: str) -> TextStats:
    """Validate an (id, text) DataFrame; raise InputError naming `source` on the first problem.

    Two passes over the data (one aggregate, one duplicate check), nothing collected but
    counts and a few example ids.
    """
    with read_errors(role, source):
        return _check_texts(df, role=role, source=source)


def _check_texts(df: DataFrame, *, role: str, source: str) -> TextStats:
    agg = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("id").isNull().cast("long")).alias("null_ids"),
        F.sum(blank(F.col("id")).cast("long")).alias("empty_ids"),
        F.sum((F.col("text").isNull() | blank(F.col("text"))).cast("long")).alias("empty"),
        F.sum(F.col("text").contains("\ufffd").cast("long")).alias("bad_utf8"),
        F.max(F.length("text")).alias("max_chars"),
        F.avg(F.length("text")).alias("mean_chars"),
    ).first()
    if agg["rows"] == 0:
        raise InputError(f"{role} {source!r}: no rows (empty {role})")
    if agg["null_ids"]:
        raise InputError(f"{role} {source!r}: {agg['null_ids']} rows have a null id")
    if agg["empty_ids"]:
        raise InputError(f"{role} {source!r}: {agg['empty_ids']} rows have an empty id (ids "
                         "name items in results and files: every one needs characters)")
    if agg["empty"]:
        ex = _examples(df.where(F.col("text").isNull() | blank(F.col("text"))))
        raise InputError(f"{role} {source!r}: {agg['empty']} rows have null or empty text "
                         f"(ids: {ex})")
    if agg["bad_utf8"]:
        ex = _examples(df.where(F.col("text").contains("\ufffd")))
        raise InputError(f"{role} {source!r}: {agg['bad_utf8']} texts are not valid UTF-8 "
                         f"(invalid bytes decoded as U+FFFD; ids: {ex})")
    dups = df.groupBy("id").count().where(F.col("count") > 1)
    ex = _examples(dups)
    if ex:
        raise InputError(f"{role} {source!r}: duplicate ids (for example {ex})")
    return TextStats(rows=int(agg["rows"]), max_chars=int(agg["max_chars"] or 0),
                     mean_chars=float(agg["mean_chars"] or 0.0))


def _examples(df: DataFrame) -> str:
    return ", ".join(repr(r["id"]) for r in df.select("id").limit(_EXAMPLES).collect())
