"""The one I/O layer of a store: reads, atomic writes, JSON reads that survive a concurrent
replace, sha256 hashing, listing and deleting, and the verified download cache.

What a store holds is data anyone who can write the store may have crafted, so reads stay
within bounds: on a local store no path under the store's root may pass through a symbolic
link (a link could lead a read, a listing or a deletion into another store or onto
``/dev/zero``), files are read only when they are regular files, and JSON documents only up to
a size and a nesting depth (``loads``). Each refusal is an IntegrityError naming the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any, Protocol

import numpy as np
import pyarrow.fs as pafs

from curindex.errors import IntegrityError, StoreError

CHUNK = 8 << 20  # bytes per read when hashing or copying; module-level so tests can shrink it
# The largest JSON document read from a store: manifests and build states (a manifest of
# 65,536 shards is about 20 MB), and the small ones (CURRENT, history entries, locks, build
# records). Module-level so tests can shrink them.
MAX_JSON_BYTES = 256 << 20
MAX_SMALL_JSON_BYTES = 1 << 20
# Nesting deeper than this is no document curindex writes (manifests nest about 8 deep); the
# parser would recurse once per level.
MAX_JSON_DEPTH = 64
_ESCAPE = re.compile(rb"\\.", re.S)  # a backslash and the character it escapes
_NOT_MARK = bytes(b for b in range(256) if b not in b'"[]{}')


class _Readable(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...


def sha256_stream(src: _Readable, sink: IO[bytes] | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of everything ``src`` yields, copying it into ``sink`` on the way."""
    h, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return size, h.hexdigest()


def sha256_local(path: str) -> tuple[int, str]:
    """(size, sha256 hex) of a local file."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def dumps(doc: dict[str, Any]) -> bytes:
    """The stored form of a JSON document (sorted keys, so equal documents are equal bytes)."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def json_depth(data: bytes) -> int:
    """How deep arrays and objects nest in the JSON text `data` (0: a scalar), counted
    without parsing, at numpy speed: escape pairs dropped, so that quotes toggle being inside
    a string; then a running count over the brackets outside strings."""
    marks = np.frombuffer(_ESCAPE.sub(b"", data).translate(None, _NOT_MARK), dtype=np.uint8)
    quote = marks == ord('"')
    inside = np.bitwise_xor.accumulate(quote.view(np.uint8)).astype(bool)
    brackets = marks[~inside & ~quote]
    if not len(brackets):
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())


def loads(data: bytes, *, max_depth: int | None = None) -> Any:
    """A JSON document read from a store; ValueError (naming the problem) when it is not
    JSON or nests deeper than `max_depth` (default MAX_JSON_DEPTH), which the parser would
    otherwise meet as a RecursionError."""
    limit = MAX_JSON_DEPTH if max_depth is None else max_depth
    if (depth := json_depth(data)) > limit:
        raise ValueError(f"it nests {depth} levels deep, more than the {limit} allowed")
    try:
        return json.loads(data)
    except RecursionError:  # unreachable after the depth check; kept as a named error
        raise ValueError(f"it nests more than {limit} levels deep") from None


class StoreIO:
    """Raw file access for one store; every error names the store and the path."""

    def __init__(self, uri: str, fs: pafs.FileSystem, root: str | None = None) -> None:
        self.uri = uri
        self.fs = fs
        self.local = isinstance(fs, pafs.LocalFileSystem)
        # Paths under `root` are confined to it (`confine`); None: no store root (a work root).
        self.root = root
        self._real_root: str | None = None
        # A single PUT replaces an S3 object atomically, so no temp name is needed there.
        self.atomic_put = self.local or type(fs).__name__ == "S3FileSystem"

    def err(self, msg: str, cls: type[StoreError] = StoreError) -> StoreError:
        return cls(f"store {self.uri}: {msg}")

    def unconfined(self, path: str) -> str | None:
        """Why ``path`` (under the store's root) must not be read, listed, written or
        deleted, or None. On a local store the path resolved with its symbolic links must be
        the same path under the resolved root: no part of it below the root is a link (the
        root itself may be one). A store holds no links; one there was put by someone else,
        and what it leads to (another store, ``/dev/zero``) is not this store's. Other
        filesystems have no links."""
        if not self.local or self.root is None:
            return None
        rel = os.path.relpath(path, self.root)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
            return f"it is not under the store's root {self.root}"
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        expected = os.path.normpath(os.path.join(self._real_root, rel))
        real = os.path.realpath(path)
        if real != expected:
            return f"it passes through a symbolic link (to {real})"
        return None

    def confine(self, path: str) -> str:
        """``path`` if it may be used (`unconfined`), else IntegrityError naming it."""
        if (why := self.unconfined(path)) is not None:
            raise self.err(f"{path} is refused: {why}", IntegrityError)
        return path

    def read(self, path: str, *, limit: int | None = None) -> bytes | None:
        """The file's bytes, None when it does not exist. On a local store only a regular file
        is read (not a device, a FIFO or a link to one); with `limit`, a file larger than
        `limit` bytes is an IntegrityError, and no more than that is ever read."""
        self.confine(path)
        try:
            if self.local:
                mode = os.stat(path).st_mode
                if not stat.S_ISREG(mode):
                    raise self.err(f"{path} is not a regular file", IntegrityError)
            with self.fs.open_input_stream(path) as f:
                data = f.read() if limit is None else f.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self.err(f"cannot read {path}: {e}") from e
        if limit is not None and len(data) > limit:
            raise self.err(f"{path} is larger than {limit} bytes, more than any document "
                           "curindex writes there", IntegrityError)
        return data

    def read_json(self, path: str, *, limit: int | None = None) -> Any:
        """Read a JSON document (at most `limit` bytes, default MAX_JSON_BYTES; nested at
        most MAX_JSON_DEPTH deep) that another process may be replacing right now.

        An object store read is a HEAD and then a GET, so a replacement in between can cut the
        bytes short or fail the GET; a fresh read then sees the whole new value.
        """
        for attempt in range(5):
            try:
                data = self.read(path, limit=MAX_JSON_BYTES if limit is None else limit)
                return None if data is None else loads(data)
            except IntegrityError:
                raise  # not a race: a link, a device, a file too large
            except StoreError:
                if attempt == 4:
                    raise
            except ValueError as e:
                if attempt == 4:
                    raise self.err(f"{path} is not JSON that curindex reads: {e}",
                                   IntegrityError) from e
            time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def writer(self, path: str) -> Iterator[IO[bytes]]:
        """Write ``path`` so that readers see the old content or the whole new one, never a part:
        a local file goes through a temp file and a rename, an S3 PUT is atomic anyway, and other
        filesystems write a temp name and move it (HDFS renames atomically)."""
        self.confine(path)
        try:
            if self.local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self.confine(os.path.dirname(path))  # made through no link
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                try:
                    with open(tmp, "wb") as f:
                        yield f
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
            elif self.atomic_put:
                with self.fs.open_output_stream(path) as f:
                    yield f
            else:
                tmp = f"{path}.tmp-{uuid.uuid4().hex}"
                with self.fs.open_output_stream(tmp) as f:
                    yield f
                self.fs.move(tmp, path)
        except OSError as e:
            raise self.err(f"cannot write {path}: {e}") from e

    def put(self, path: str, data: bytes) -> None:
        with self.writer(path) as f:
            f.write(data)

    def info(self, path: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(path)
        except OSError as e:
            raise self.err(f"cannot look at {path}: {e}") from e

    def is_file(self, path: str) -> bool:
        return self.info(path).type == pafs.FileType.File

    def listdir(self, path: str, *, recursive: bool = False) -> list[pafs.FileInfo]:
        """What is under ``path`` (nothing when it does not exist)."""
        self.confine(path)
        try:
            sel = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
            return self.fs.get_file_info(sel)
        except OSError as e:
            raise self.err(f"cannot list {path}: {e}") from e

    def newest_mtime_ns(self, path: str, *, recursive: bool = True) -> int | None:
        """The newest modification time of ``path`` and what is under it (None: none known)."""
        infos = [self.info(path), *self.listdir(path, recursive=recursive)]
        times = [i.mtime_ns for i in infos if i.mtime_ns is not None]
        return max(times) if times else None

    def outside(self, path: str, root: str) -> str | None:
        """Why ``path`` may not be opened or deleted as part of the folder ``root``, or None.

        On a local filesystem a path read from the store (a version folder, a work folder a
        build record names) is resolved, symbolic links included, and must lie under ``root``
        resolved the same way; other filesystems have no links and paths are compared as
        given. A path that is itself a symbolic link is refused too: deleting through it
        would reach what it points at."""
        if not self.local:
            inside = path.rstrip("/").startswith(root.rstrip("/") + "/")
            return None if inside else f"it is not under {root}"
        if os.path.islink(path):
            return f"it is a symbolic link (to {os.readlink(path)})"
        real, top = os.path.realpath(path), os.path.realpath(root)
        if real != top and not real.startswith(top.rstrip(os.sep) + os.sep):
            return f"it resolves to {real}, which is not under {top}"
        return None

    def delete_dir(self, path: str) -> None:
        self.confine(path)
        try:
            if self.info(path).type != pafs.FileType.NotFound:
                self.fs.delete_dir(path)
        except OSError as e:
            raise self.err(f"cannot delete {path}: {e}") from e

    def delete_file(self, path: str) -> None:
        self.confine(path)
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self.err(f"cannot delete {path}: {e}") from e

    def hash(self, path: str) -> tuple[int, str]:
        """(size, sha256 hex) of a stored file."""
        self.confine(path)
        try:
            with self.fs.open_input_stream(path) as f:
                return sha256_stream(f)
        except OSError as e:
            raise self.err(f"cannot read {path}: {e}") from e

    def upload(self, local_path: str, path: str, what: str) -> tuple[int, str]:
        """Copy a local file to ``path``, hashing it on the way; returns (size, sha256 hex)."""
        try:
            src = open(local_path, "rb")  # noqa: SIM115 - closed below, errors reported apart
        except OSError as e:
            raise self.err(f"{what}: cannot read local file {local_path}: {e}") from e
        with src, self.writer(path) as dst:
            return sha256_stream(src, dst)

    def download(self, path: str, dest: str, size: int, sha256: str, what: str) -> str:
        """A verified local copy of ``path`` at ``dest``, reused when one already hashes right
        (stored files are immutable), else downloaded to a temp name, checked and renamed."""
        if os.path.isfile(dest) and sha256_local(dest) == (size, sha256):
            return dest
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
                got_size, got_sha = sha256_stream(src, dst)
            if (got_size, got_sha) != (size, sha256):
                raise self.err(
                    f"{what}: download does not match the manifest (size {got_size}, sha256 "
                    f"{got_sha[:12]}; manifest size {size}, sha256 {sha256[:12]})",
                    IntegrityError,
                )
            os.replace(tmp, dest)
        except FileNotFoundError as e:
            raise self.err(f"{what} is missing", IntegrityError) from e
        except OSError as e:
            raise self.err(f"{what}: cannot download to {dest}: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return dest
