"""The score stage's chunk files: written whole or not at all, and kept across attempts.

Every item has a stable chunk number (``pipeline.score.chunk_of``). A task writes a chunk's rows
to a temporary file under ``<dir>/_temporary/`` and renames it to ``<dir>/chunk-NNNNN.parquet``
when the chunk is complete (``ChunkWriter``): a reader sees a whole chunk or none of it.
``<dir>/_meta.json`` records what the chunks were scored from; a later attempt with the same
record keeps the committed chunks (``start_output``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curindex.errors import StoreError
from curindex.kinds import scorerows
from curindex.store.io import MAX_SMALL_JSON_BYTES, loads

log = logging.getLogger("curindex.pipeline")

META_FILE = "_meta.json"
TMP_DIR = "_temporary"  # Spark and pyarrow datasets skip names starting with "_"
_CHUNK_FILE = re.compile(r"^chunk-(\d{5,})\.parquet$")


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:05d}.parquet"


def open_dir(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a folder given as a local path or a URI (Hadoop's ``s3a://`` and
    ``s3n://`` are opened as ``s3://``, ``file:/x`` as the local path ``/x``)."""
    uri = uri.strip().rstrip("/")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        if uri.startswith("file:"):  # Hadoop's file:/path
            uri = uri[len("file:"):]
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    if scheme in ("s3a", "s3n"):
        uri = f"s3://{rest}"
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


class ChunkWriter:
    """Writes one chunk's score rows to a temporary file under ``<dir>/_temporary/`` and, on
    ``commit``, renames it to ``<dir>/chunk-NNNNN.parquet``: a reader never sees part of a
    chunk. Another attempt at the same chunk writes its own temporary file and replaces the
    committed one with the same content."""

    def __init__(self, fs: pafs.FileSystem, directory: str, chunk: int, *,
                 bi: bool = False, stamp: dict[str, str] | None = None,
                 schema: pa.Schema | None = None) -> None:
        self.fs, self.chunk, self.rows = fs, chunk, 0
        self.path = f"{directory}/{chunk_name(chunk)}"
        tmp_dir = f"{directory}/{TMP_DIR}"
        self.tmp = f"{tmp_dir}/chunk-{chunk:05d}.{_attempt_id()}-{secrets.token_hex(4)}.parquet"
        self._writer: pq.ParquetWriter | None = None
        with self._failing("create"):
            fs.create_dir(tmp_dir, recursive=True)
            self._out = fs.open_output_stream(self.tmp)
            schema = schema or scorerows.arrow_schema(bi=bi)  # score rows unless told
            self._writer = pq.ParquetWriter(
                self._out, schema.with_metadata(stamp_metadata(stamp)) if stamp else schema)

    @contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """A failed write (a full disk, a lost mount) as a StoreError naming the chunk."""
        try:
            yield
        except OSError as e:
            raise StoreError(f"score chunk {self.path}: cannot {what} it ({self.tmp}): "
                             f"{e}") from e

    def write(self, batch: pa.RecordBatch) -> None:
        assert self._writer is not None, "chunk already committed or aborted"
        with self._failing("write"):
            self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def commit(self) -> int:
        """Finish the file and move it into place; returns its row count."""
        assert self._writer is not None, "chunk already committed or aborted"
        with self._failing("write"):
            self._writer.close()
            self._writer = None
            self._out.close()
            self.fs.move(self.tmp, self.path)  # atomic on a local filesystem and HDFS
        return self.rows

    def abort(self) -> None:
        if self._writer is None:
            return
        self._writer = None
        try:
            self._out.close()
            self.fs.delete_file(self.tmp)
        except OSError:
            pass  # a leftover under _temporary is never read and goes with the folder


def _attempt_id() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return int(ctx.taskAttemptId()) if ctx is not None else 0


STAMP_KEY = b"curindex.stamp"  # a chunk's Parquet metadata: what it was scored with


def stamp_metadata(stamp: dict[str, str]) -> dict[bytes, bytes]:
    return {STAMP_KEY: json.dumps(stamp, sort_keys=True).encode()}


def chunk_stamp(fs: pafs.FileSystem, path: str) -> dict[str, str] | None:
    """What a committed chunk says it was scored with (None: it says nothing)."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).schema_arrow.metadata or {}
    try:
        doc = loads(meta[STAMP_KEY])
    except (KeyError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def stale_chunks(fs: pafs.FileSystem, directory: str, stamp: dict[str, str]
                 ) -> dict[int, list[str]]:
    """chunk number -> the keys of `stamp` its file differs in, for every committed chunk
    that was not scored with `stamp` (a footer read per chunk)."""
    out = {}
    for chunk, path in committed_chunks(fs, directory).items():
        got = chunk_stamp(fs, path) or {}
        changed = sorted(k for k in stamp if got.get(k) != stamp[k])
        if changed:
            out[chunk] = changed
    return out


def committed_chunks(fs: pafs.FileSystem, directory: str) -> dict[int, str]:
    """chunk number -> path of every committed chunk file in `directory`."""
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    out = {}
    for info in infos:
        m = _CHUNK_FILE.match(info.base_name)
        if m and info.type == pafs.FileType.File:
            out[int(m.group(1))] = info.path
    return out


def chunk_blocks(
    batches: Iterable[pa.RecordBatch], block_items: int
) -> Iterator[tuple[int, pa.Table | None]]:
    """Cut rows sorted by their ``chunk`` column into blocks of at most `block_items` rows of
    one chunk, counted from the chunk's first row (so a chunk is cut the same way whatever
    else its partition holds). Yields ``(chunk, block)`` per block and ``(chunk, None)`` after
    a chunk's last block."""
    current: int | None = None
    pending: list[pa.RecordBatch] = []
    n = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        chunks = batch.column("chunk").to_numpy(zero_copy_only=False)
        starts = [0, *(np.flatnonzero(chunks[1:] != chunks[:-1]) + 1).tolist()]
        for start, end in zip(starts, [*starts[1:], len(chunks)], strict=True):
            chunk = int(chunks[start])
            if chunk != current:
                if current is not None:
                    if chunk < current:
                        raise RuntimeError(f"score rows not sorted by chunk: {chunk} after "
                                           f"{current}")
                    if pending:
                        yield current, pa.Table.from_batches(pending)
                    yield current, None
                current, pending, n = chunk, [], 0
            pending.append(batch.slice(start, end - start))
            n += end - start
            while n >= block_items:
                table = pa.Table.from_batches(pending)
                yield current, table.slice(0, block_items)
                rest = table.slice(block_items)
                pending = [b for b in rest.to_batches() if b.num_rows]
                n = rest.num_rows
    if current is not None:
        if pending:
            yield current, pa.Table.from_batches(pending)
        yield current, None


def read_meta(fs: pafs.FileSystem, root: str) -> dict | None:
    """The folder's record, None when there is none or it is not one (the folder then
    starts over)."""
    try:
        with fs.open_input_stream(f"{root}/{META_FILE}") as f:
            doc = loads(f.read(MAX_SMALL_JSON_BYTES + 1))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def start_output(fs: pafs.FileSystem, root: str, meta: dict, *, resume: bool) -> dict[int, str]:
    """Make `root` ready for scoring described by `meta`; returns the committed chunks that
    can be kept (none unless `resume` and the folder was scored from the same `meta`)."""
    kept: dict[int, str] = {}
    if fs.get_file_info(root).type != pafs.FileType.NotFound:
        old = read_meta(fs, root) if resume else None
        if old is not None and old == meta:
            kept = committed_chunks(fs, root)
            if fs.get_file_info(f"{root}/{TMP_DIR}").type != pafs.FileType.NotFound:
                fs.delete_dir(f"{root}/{TMP_DIR}")  # what killed attempts left unfinished
        else:
            if old is not None and committed_chunks(fs, root):
                log.info("score: the chunks in %s were scored from other inputs (%s); "
                         "starting over", root, ", ".join(
                             k for k in sorted(meta) if old.get(k) != meta[k]))
            fs.delete_dir(root)
    tmp = f"{root}/{META_FILE}.{secrets.token_hex(4)}.tmp"
    try:
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(tmp) as out:
            out.write(json.dumps(meta, indent=1, sort_keys=True).encode())
        fs.move(tmp, f"{root}/{META_FILE}")
    except OSError as e:  # a full disk, a folder it may not write
        raise StoreError(f"score folder {root}: cannot write {META_FILE}: {e}") from e
    return kept


def rows_in(fs: pafs.FileSystem, paths: Iterable[str]) -> int:
    total = 0
    for path in paths:
        with fs.open_input_file(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total
