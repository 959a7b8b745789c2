"""Conditional writes: create a small object only if it does not exist, replace or delete it only
if it still holds what was read. Everything exact in the store (CURRENT, its history, locks)
rests on these three operations.

A read returns the bytes with a *tag*; a conditional write names the tag it expects. On S3 the
tag is the ETag and the condition is checked by S3 itself (``If-None-Match: *``, ``If-Match``),
atomically with the write. pyarrow has no conditional writes, so S3 goes through boto3 (the
``s3`` extra), imported only when an ``s3://`` store first needs it. On a local filesystem the
tag is the sha256 of the bytes (every document written here is unique: it carries a token or a
time) and the read-compare-write runs under an exclusive ``flock`` on one guard file per store,
which the kernel releases if the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit

import curindex.store.io as store_io
from curindex.errors import ConflictError, IntegrityError, StoreError
from curindex.store.io import StoreIO

GUARD = ".cas-guard"  # in the store root: local conditional writes hold it, briefly


class PreconditionFailed(ConflictError):
    """A conditional write found the object changed (or present, or gone) since it was read."""


class Tagged(NamedTuple):
    data: bytes
    tag: str


class Cas(Protocol):
    """Conditional access to small objects of one store, by full store path."""

    def read(self, path: str) -> Tagged | None: ...

    def write(self, path: str, data: bytes, *, expect: str | None) -> str:
        """Write ``data`` if ``path`` holds the object tagged ``expect`` (None: if it does not
        exist); returns the new tag, or raises :class:`PreconditionFailed`."""
        ...

    def delete(self, path: str, *, expect: str) -> bool:
        """Delete ``path`` if it holds the object tagged ``expect``; False if it did not."""
        ...


class LocalCas:
    def __init__(self, io: StoreIO, root: str) -> None:
        self.io = io
        self.guard = os.path.join(root, GUARD)

    @contextlib.contextmanager
    def _guarded(self, path: str) -> Iterator[Tagged | None]:
        try:
            # O_CREAT makes only the guard file: the store folder itself must exist (open
            # checked it), so a store deleted meanwhile is not re-created here; O_NOFOLLOW:
            # a link put in its place must not make it create a file elsewhere.
            fd = os.open(self.guard, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise self.io.err(f"cannot open {self.guard}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self.read(path)
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def read(self, path: str) -> Tagged | None:
        data = self.io.read(path, limit=store_io.MAX_SMALL_JSON_BYTES)
        return None if data is None else Tagged(data, hashlib.sha256(data).hexdigest())

    def write(self, path: str, data: bytes, *, expect: str | None) -> str:
        with self._guarded(path) as now:
            _check(path, now, expect)
            self.io.put(path, data)  # a temp file and a rename: readers see all or nothing
        return hashlib.sha256(data).hexdigest()

    def delete(self, path: str, *, expect: str) -> bool:
        with self._guarded(path) as now:
            if now is None or now.tag != expect:
                return False
            self.io.delete_file(path)
        return True


def _check(path: str, now: Tagged | None, expect: str | None) -> None:
    if expect is None and now is not None:
        raise PreconditionFailed(f"{path} exists already")
    if expect is not None and (now is None or now.tag != expect):
        raise PreconditionFailed(f"{path} changed since it was read")


# S3 answers a failed condition with 412 PreconditionFailed, a concurrent conditional write
# with 409 ConditionalRequestConflict, and If-Match on a missing object with 404.
_LOST = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


_CLIENTS: dict[tuple[str | None, str | None], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _shared_client(uri: str, endpoint: str | None, region: str | None) -> Any:
    """One boto3 client per endpoint and region in a process: making one costs a few hundred
    milliseconds of CPU, and clients are safe to share between threads."""
    with _CLIENTS_LOCK:
        if (endpoint, region) not in _CLIENTS:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as e:
                raise StoreError(
                    f"store {uri}: publishing and locks on S3 need boto3 "
                    "(pip install 'curindex[s3]')"
                ) from e
            # Shared by every store and thread of the process: a larger pool than the default 10.
            kwargs: dict[str, Any] = {"config": Config(max_pool_connections=64)}
            if endpoint:
                kwargs["endpoint_url"] = endpoint
                # pyarrow addresses a custom endpoint by path, so the same must work here.
                kwargs["config"] = kwargs["config"].merge(Config(s3={"addressing_style": "path"}))
            if region:
                kwargs["region_name"] = region
            # Its own session: boto3's default session is not safe to create from threads.
            _CLIENTS[endpoint, region] = boto3.session.Session().client("s3", **kwargs)
        return _CLIENTS[endpoint, region]


class S3Cas:
    """Conditional writes through boto3 against the same endpoint as the store's pyarrow
    filesystem: ``endpoint_override``, ``scheme`` and ``region`` are taken from the store URI,
    credentials from the environment, as boto3 finds them."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            query = {k: v[-1] for k, v in parse_qs(urlsplit(self.uri).query).items()}
            endpoint, region = query.get("endpoint_override"), query.get("region")
            if endpoint and "://" not in endpoint:
                endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
            self._client = _shared_client(self.uri, endpoint, region)
        return self._client

    def _bucket_key(self, path: str) -> tuple[str, str]:
        bucket, _, key = path.partition("/")
        return bucket, key

    def _fail(self, what: str, path: str, e: Exception) -> StoreError:
        return StoreError(f"store {self.uri}: cannot {what} {path}: {e}")

    def read(self, path: str) -> Tagged | None:
        bucket, key = self._bucket_key(path)
        limit = store_io.MAX_SMALL_JSON_BYTES
        try:
            got = self.client().get_object(Bucket=bucket, Key=key)
            data = got["Body"].read(limit + 1)  # never more than a document can hold
        except Exception as e:
            if _code(e) in _MISSING:
                return None
            raise self._fail("read", path, e) from e
        if len(data) > limit:
            raise IntegrityError(f"store {self.uri}: {path} is larger than {limit} bytes, "
                                 "more than any document curindex writes there")
        return Tagged(data, got["ETag"])

    def write(self, path: str, data: bytes, *, expect: str | None) -> str:
        bucket, key = self._bucket_key(path)
        cond = {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        try:
            return self.client().put_object(Bucket=bucket, Key=key, Body=data, **cond)["ETag"]
        except Exception as e:
            code = _code(e)
            if code in _LOST or (expect is not None and code in _MISSING):
                raise PreconditionFailed(f"{path} changed since it was read ({code})") from e
            raise self._fail("write", path, e) from e

    def delete(self, path: str, *, expect: str) -> bool:
        bucket, key = self._bucket_key(path)
        try:
            self.client().delete_object(Bucket=bucket, Key=key, IfMatch=expect)
        except Exception as e:
            if _code(e) in _LOST | _MISSING:
                return False
            raise self._fail("delete", path, e) from e
        return True


def _code(e: Exception) -> str | None:
    """The S3 error code of a botocore ClientError (None for anything else)."""
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or status)


class NoCas:
    """Filesystems without conditional writes (HDFS, GCS through pyarrow, ...): reading works,
    but nothing that must be exact can be done there."""

    def __init__(self, io: StoreIO) -> None:
        self.io = io

    def _refuse(self) -> StoreError:
        return self.io.err(
            "publishing and locks need conditional writes, which curindex does on local paths "
            "and s3:// stores only"
        )

    def read(self, path: str) -> Tagged | None:
        data = self.io.read(path, limit=store_io.MAX_SMALL_JSON_BYTES)
        return None if data is None else Tagged(data, hashlib.sha256(data).hexdigest())

    def write(self, path: str, data: bytes, *, expect: str | None) -> str:
        raise self._refuse()

    def delete(self, path: str, *, expect: str) -> bool:
        raise self._refuse()


def cas_for(io: StoreIO, root: str) -> Cas:
    if io.local:
        return LocalCas(io, root)
    if io.uri.startswith("s3://"):
        return S3Cas(io.uri)
    return NoCas(io)
