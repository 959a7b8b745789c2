"""A versioned index store on any ``pyarrow.fs`` filesystem (local disk, S3, HDFS, ...).

Layout under the store root::

    versions/<id>/...              the files of one version, written by the driver and executors
    versions/<id>/manifest.json    written last: a version without it is incomplete and invisible
    CURRENT                        {"version", "previous", "published_at", "seq"}
    CURRENT.lease                  held while CURRENT is replaced, expires if its holder dies
    history/<seq>.json             every CURRENT value ever written, for audit and rollback

A committed version is immutable, so a version may also *reference* files of an older one (an
incremental build shares the shards it did not change): its manifest's ``references`` map a
relative path to the version that holds the file, with its size and sha256. Reading, verifying
and downloading follow references; prune never deletes a version a kept version references.

Serving reads ``CURRENT`` and opens the version it names, so
publishing and rolling back are one small pointer write. The pointer is replaced under a lease
and only if it still holds the value the publisher read first (compare-and-swap), so of two
racing publishers exactly one wins and the other gets a :class:`StoreError`.

On a local filesystem the lease is created exclusively (``link``) and the pointer is swapped
with an atomic rename. Object stores have neither, but a single PUT replaces an object
atomically and reads after writes are consistent: a publisher writes the lease, waits
``lease_settle`` seconds for any writer that saw the same free lease, and only holds it if the
lease still names it then. That is not exact (a writer stalled for longer than the wait can
still overlap), so the lease is checked once more right before CURRENT is written; without
conditional writes, which pyarrow does not offer, an object store allows no more.

Only JSON is ever read back; nothing in the store runs as code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import pyarrow.fs as pafs

from curindex.errors import StoreError
from curindex.gate import check_publishable

# \Z, not $: "$" also matches before a trailing newline. Ids must also not contain "..".
VERSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# "current" names the published version wherever a version id is accepted.
RESERVED_IDS = frozenset({"current"})
MANIFEST = "manifest.json"
POINTER = "CURRENT"
LEASE = "CURRENT.lease"
HISTORY_DIR = "history"
VERSIONS_DIR = "versions"
# The order in which publish() passes its steps; crash_at names one of them.
PUBLISH_STEPS = (
    "verified",
    "lease_acquired",
    "history_written",
    "tmp_written",
    "renamed",
    "lease_released",
)
STALE_AFTER_S = 86400.0  # incomplete versions and temp files older than this are garbage
_CHUNK = 8 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class SimulatedCrash(Exception):
    """Raised by publish() at the step named by ``Store.crash_at``, to test crash recovery."""


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def validate_version_id(version: str) -> str:
    """Return ``version`` if it is a safe version id, else raise :class:`StoreError`."""
    if (
        not isinstance(version, str)
        or not VERSION_ID_RE.match(version)
        or ".." in version
        or version in RESERVED_IDS
    ):
        raise StoreError(
            f"invalid version id {version!r}: use 1-128 characters of letters, digits, '.', "
            f"'_' and '-', starting with a letter or digit, without '..', not 'current'"
        )
    return version


def validate_relpath(rel: str) -> str:
    """Return ``rel`` if it is a plain relative path inside a version, else raise StoreError."""
    problem = None
    if not isinstance(rel, str) or not rel:
        problem = "is empty"
    elif "\\" in rel or any(ord(c) < 32 for c in rel):
        problem = "contains a backslash or a control character"
    elif rel.startswith("/"):
        problem = "is absolute"
    else:
        for part in rel.split("/"):
            if part in ("", ".", ".."):
                problem = "has an empty, '.' or '..' part"
            elif part.startswith("~"):
                problem = "has a part starting with '~'"
    if problem:
        raise StoreError(f"invalid file path {rel!r} in a version: it {problem}")
    return rel


@dataclass(frozen=True)
class FileEntry:
    """One file of a version, as written: path relative to the version folder."""

    path: str
    size: int
    sha256: str


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dumps(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


class Store:
    """One index store, opened from a URI or a local path. Pickles as its URI."""

    lease_ttl: float = 30.0  # a lease older than this is taken to belong to a dead publisher
    lease_wait: float = 90.0  # longer than lease_ttl, so a dead holder's lease is outlived
    lease_settle: float = 0.25  # object stores only; see the module docstring

    def __init__(self, uri: str, fs: pafs.FileSystem, root: str) -> None:
        self.uri = uri
        self.fs = fs
        self.root = root
        self.crash_at: str | None = None
        self._local = isinstance(fs, pafs.LocalFileSystem)
        self._refs: dict[str, dict[str, Any]] = {}  # committed versions' references

    @classmethod
    def open(cls, uri: str, *, create: bool = False) -> Store:
        """Open ``uri``: a local path, or anything ``pyarrow.fs.FileSystem.from_uri`` opens."""
        if not isinstance(uri, str) or not uri.strip():
            raise StoreError(f"store uri {uri!r} is empty")
        uri = uri.strip()
        if "://" not in uri:
            path = os.path.abspath(os.path.expanduser(uri))
            return cls(path, pafs.LocalFileSystem(), path)
        opened = uri
        if uri.startswith("s3://") and "allow_delayed_open" not in uri:
            # Small objects (pointers, leases, manifests) then take one PUT, not a three-request
            # multipart upload.
            opened += ("&" if "?" in uri else "?") + "allow_delayed_open=true"
        try:
            fs, root = pafs.FileSystem.from_uri(opened)
        except (ValueError, OSError) as e:
            raise StoreError(f"cannot open store {uri}: {e}") from e
        root = root.rstrip("/")
        if not root:
            raise StoreError(f"store {uri} has no path (a bucket or folder is needed)")
        base, sep, query = uri.partition("?")
        return cls(base.rstrip("/") + sep + query, fs, root)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Store.open, (self.uri,))

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # --- paths and raw io -------------------------------------------------------------------

    def _p(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _vdir(self, version: str) -> str:
        try:
            return self._p(VERSIONS_DIR, validate_version_id(version))
        except StoreError as e:
            raise self._err(str(e)) from None

    def _rel(self, version: str, rel: str) -> str:
        try:
            return validate_relpath(rel)
        except StoreError as e:
            raise self._err(f"version {version}: {e}") from None

    def _err(self, msg: str) -> StoreError:
        return StoreError(f"store {self.uri}: {msg}")

    def _read(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._err(f"cannot read {path}: {e}") from e

    def _read_json(self, path: str) -> Any:
        """Read a small JSON object that another process may be replacing right now.

        An object store read is a HEAD and then a GET, so a replacement in between can cut the
        bytes short or fail the GET; a fresh read then sees the whole new value.
        """
        for attempt in range(5):
            try:
                data = self._read(path)
                return None if data is None else json.loads(data)
            except (StoreError, ValueError):
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _writer(self, path: str) -> Iterator[IO[bytes]]:
        """Write ``path`` so that readers see the old content or the whole new one, never a part.

        Local files go through a temp file and a rename; an object store PUT is atomic anyway.
        """
        try:
            if not self._local:
                with self.fs.open_output_stream(path) as f:
                    yield f
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
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
        except OSError as e:
            raise self._err(f"cannot write {path}: {e}") from e

    def _put(self, path: str, data: bytes) -> None:
        with self._writer(path) as f:
            f.write(data)

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def _hash(self, path: str) -> tuple[int, str]:
        h, size = hashlib.sha256(), 0
        try:
            with self.fs.open_input_stream(path) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except OSError as e:
            raise self._err(f"cannot read {path}: {e}") from e
        return size, h.hexdigest()

    # --- build state (interim: the store package owns it) -------------------------------------

    def default_work_dir(self, version: str) -> str:
        return self._p("_work", validate_version_id(version))

    def _state(self, version: str, stage: str = "") -> str:
        base = self._p("_builds", validate_version_id(version))
        return f"{base}/{stage}.json" if stage else base

    def save_build_state(self, version: str, stage: str, doc: dict) -> None:
        self._put(self._state(version, stage), json.dumps(doc).encode())

    def load_build_state(self, version: str, stage: str) -> dict | None:
        data = self._read(self._state(version, stage))
        return None if data is None else json.loads(data)

    def clear_build_state(self, version: str) -> None:
        if self.fs.get_file_info(self._state(version)).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self._state(version))

    def has_file(self, version: str, rel: str, size: int) -> bool:
        info = self.fs.get_file_info(f"{self._vdir(version)}/{self._rel(version, rel)}")
        return info.type == pafs.FileType.File and info.size == size

    # --- writing a version --------------------------------------------------------------------

    def _refuse_committed(self, version: str) -> str:
        vdir = self._vdir(version)
        if self._exists(f"{vdir}/{MANIFEST}"):
            raise self._err(f"version {version} is committed and immutable")
        return vdir

    def _file_path(self, version: str, rel: str) -> str:
        self._rel(version, rel)
        if rel == MANIFEST:
            raise self._err(f"version {version}: {MANIFEST} is written by commit_version only")
        return f"{self._refuse_committed(version)}/{rel}"

    def begin_version(self, version: str) -> None:
        """Start writing ``version``, removing what a crashed attempt at the same id left."""
        vdir = self._vdir(version)
        try:
            inside = self.fs.get_file_info(
                pafs.FileSelector(vdir, recursive=True, allow_not_found=True)
            )
            if any(info.path == f"{vdir}/{MANIFEST}" for info in inside):
                raise self._err(f"version {version} is committed and immutable")
            if inside:
                self.fs.delete_dir(vdir)
            if self._local:
                self.fs.create_dir(vdir, recursive=True)
        except OSError as e:
            raise self._err(f"cannot prepare version {version}: {e}") from e

    def write_bytes(self, version: str, rel: str, data: bytes) -> FileEntry:
        path = self._file_path(version, rel)
        self._put(path, data)
        return FileEntry(rel, len(data), hashlib.sha256(data).hexdigest())

    def upload_file(self, version: str, rel: str, local_path: str) -> FileEntry:
        """Copy a local file into the version, hashing it on the way."""
        path = self._file_path(version, rel)
        h, size = hashlib.sha256(), 0
        try:
            src = open(local_path, "rb")  # noqa: SIM115 - closed below, errors reported apart
        except OSError as e:
            raise self._err(f"version {version}: cannot read local file {local_path}: {e}") from e
        with src, self._writer(path) as dst:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        return FileEntry(rel, size, h.hexdigest())

    def commit_version(
        self, version: str, manifest: dict[str, Any], files: list[FileEntry],
        references: dict[str, str] | None = None, created_at: str | None = None,
    ) -> dict[str, Any]:
        """Write the manifest, which makes the version complete; returns what was written.

        `references` maps relative paths this version uses but does not hold to the committed
        version that holds each (not itself a reference there); their sizes and sha256s are
        taken from that version's manifest.
        """
        vdir = self._refuse_committed(version)
        if not isinstance(manifest, dict):
            raise self._err(f"version {version}: manifest must be a dict, not {type(manifest)}")
        listed: dict[str, dict[str, Any]] = {}
        for e in files:
            if not _SHA256_RE.match(str(e.sha256)):
                raise self._err(f"version {version}: file {e.path}: {e.sha256!r} is no sha256")
            entry = {"size": int(e.size), "sha256": e.sha256}
            if listed.setdefault(self._rel(version, e.path), entry) != entry:
                raise self._err(f"version {version}: file {e.path} is listed twice, differently")
        names = sorted(listed)
        infos = self.fs.get_file_info([f"{vdir}/{rel}" for rel in names])
        for rel, info in zip(names, infos, strict=True):
            if info.type != pafs.FileType.File:
                raise self._err(f"version {version}: file {rel} is missing")
            if info.size != listed[rel]["size"]:
                raise self._err(
                    f"version {version}: file {rel}: size {info.size} != {listed[rel]['size']}"
                    " (stored != listed)"
                )
        refs = {}
        for rel, holder in sorted((references or {}).items()):
            self._rel(version, rel)
            if rel in listed:
                raise self._err(f"version {version}: file {rel} is both held and referenced")
            entry = self.read_manifest(holder)["files"].get(rel)
            if entry is None:
                raise self._err(f"version {version}: referenced file {rel} is not held by "
                                f"version {holder}")
            refs[rel] = {"version": holder, **entry}
        doc = {
            **manifest,
            "version": version,
            "files": {rel: listed[rel] for rel in names},
            "references": refs,
            "created_at": created_at or _now_iso(),
        }
        try:
            data = _dumps(doc)
        except (TypeError, ValueError) as e:
            raise self._err(f"version {version}: manifest is not JSON: {e}") from e
        self._put(f"{vdir}/{MANIFEST}", data)
        return doc

    # --- reading ------------------------------------------------------------------------------

    def _manifest(self, version: str) -> dict[str, Any] | None:
        data = self._read(f"{self._vdir(version)}/{MANIFEST}")
        if data is None:
            return None
        where = f"version {version}: {MANIFEST}"
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise self._err(f"{where} is not JSON: {e}") from e
        if not isinstance(doc, dict) or doc.get("version") != version:
            raise self._err(f"{where} is not a manifest of this version")
        files = doc.get("files")
        if not isinstance(files, dict) or not isinstance(doc.get("created_at"), str):
            raise self._err(f"{where} lacks 'files' or 'created_at'")
        for rel, entry in files.items():
            self._rel(f"{version}: {MANIFEST}", rel)
            if (
                not isinstance(entry, dict)
                or type(entry.get("size")) is not int
                or entry["size"] < 0
                or not _SHA256_RE.match(str(entry.get("sha256")))
            ):
                raise self._err(f"{where}: file {rel} needs an int size and a sha256")
        refs = doc.setdefault("references", {})
        if not isinstance(refs, dict) or not all(
            isinstance(e, dict) and _is_version_id(str(e.get("version"))) for e in refs.values()
        ):
            raise self._err(f"{where}: 'references' must map paths to {{version, size, sha256}}")
        for rel in refs:
            self._rel(f"{version}: {MANIFEST}", rel)
        return doc

    def holder(self, version: str, rel: str) -> str:
        """The version that holds `rel` for `version`: itself, or the version it references."""
        refs = self._refs.get(version)
        if refs is None:  # a committed manifest never changes: read it once per Store
            doc = self._manifest(version)
            if doc is None:
                return version  # not committed (yet): it holds all its files
            refs = self._refs[version] = doc["references"]
        return refs[rel]["version"] if rel in refs else version

    def _complete(self) -> list[tuple[str, dict[str, Any]]]:
        sel = pafs.FileSelector(self._p(VERSIONS_DIR), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(sel)
        except OSError as e:
            raise self._err(f"cannot list versions: {e}") from e
        found = []
        for info in infos:
            if info.type == pafs.FileType.Directory and _is_version_id(info.base_name):
                doc = self._manifest(info.base_name)
                if doc is not None:
                    found.append((info.base_name, doc))
        return sorted(found, key=lambda vm: (vm[1]["created_at"], vm[0]))

    def list_versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return [v for v, _ in self._complete()]

    def read_manifest(self, version: str) -> dict[str, Any]:
        doc = self._manifest(version)
        if doc is None:
            raise self._err(f"version {version} does not exist or is incomplete (no {MANIFEST})")
        return doc

    def read_bytes(self, version: str, rel: str) -> bytes:
        version = self.holder(version, rel)
        data = self._read(f"{self._vdir(version)}/{self._rel(version, rel)}")
        if data is None:
            raise self._err(f"version {version}: file {rel} is missing")
        return data

    def open_input(self, version: str, rel: str) -> Any:
        """A random-access reader (``pyarrow.NativeFile``) of a file of the version, followed to
        the version holding it when referenced."""
        version = self.holder(version, rel)
        try:
            return self.fs.open_input_file(f"{self._vdir(version)}/{self._rel(version, rel)}")
        except FileNotFoundError as e:
            raise self._err(f"version {version}: file {rel} is missing") from e
        except OSError as e:
            raise self._err(f"version {version}: cannot read {rel}: {e}") from e

    def local_path(self, version: str, rel: str, *, cache_dir: str | None = None) -> str:
        """A local path to the file (followed to the version holding it when referenced): the
        file itself on a local store, else a verified copy."""
        version = self.holder(version, rel)
        path = f"{self._vdir(version)}/{self._rel(version, rel)}"
        if self._local:
            if not os.path.isfile(path):
                raise self._err(f"version {version}: file {rel} is missing")
            return path
        entry = self.read_manifest(version)["files"].get(rel)
        if entry is None:
            raise self._err(f"version {version}: file {rel} is not in the manifest")
        if cache_dir is None:
            key = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
            cache_dir = os.path.join(tempfile.gettempdir(), f"curindex-store-{key}")
        dest = os.path.join(cache_dir, version, *rel.split("/"))
        # Versions are immutable, so a cached copy that still hashes right is the file.
        if os.path.isfile(dest) and _local_digest(dest) == (entry["size"], entry["sha256"]):
            return dest
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.tmp-{uuid.uuid4().hex}"
        h, size = hashlib.sha256(), 0
        try:
            with self.fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
            if (size, h.hexdigest()) != (entry["size"], entry["sha256"]):
                raise self._err(
                    f"version {version}: file {rel}: download does not match the manifest "
                    f"(size {size}, sha256 {h.hexdigest()[:12]}; manifest size {entry['size']}, "
                    f"sha256 {entry['sha256'][:12]})"
                )
            os.replace(tmp, dest)
        except FileNotFoundError as e:
            raise self._err(f"version {version}: file {rel} is missing") from e
        except OSError as e:
            raise self._err(f"version {version}: cannot download {rel} to {dest}: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return dest

    def verify(self, version: str) -> None:
        """Check every file of the manifest, and every file it references in an older version:
        present, right size, right sha256."""
        doc = self.read_manifest(version)
        wanted = [(version, rel, want) for rel, want in sorted(doc["files"].items())]
        for rel, ref in sorted(doc["references"].items()):
            if not self._exists(f"{self._vdir(ref['version'])}/{MANIFEST}"):
                raise self._err(f"version {version}: file {rel} references version "
                                f"{ref['version']}, which is gone")
            wanted.append((ref["version"], rel, ref))
        infos = self.fs.get_file_info([f"{self._vdir(v)}/{rel}" for v, rel, _ in wanted])
        for (holder, rel, want), info in zip(wanted, infos, strict=True):
            shown = rel if holder == version else f"{rel} (held by version {holder})"
            if info.type != pafs.FileType.File:
                raise self._err(f"version {version}: file {shown} is missing")
            if info.size != want["size"]:
                raise self._err(
                    f"version {version}: file {shown}: size {info.size} != {want['size']}"
                    " (stored != manifest)"
                )
            if self._hash(f"{self._vdir(holder)}/{rel}")[1] != want["sha256"]:
                raise self._err(f"version {version}: file {shown}: sha256 mismatch")

    def _pointer(self) -> dict[str, Any] | None:
        try:
            doc = self._read_json(self._p(POINTER))
            if doc is None:
                return None
            validate_version_id(doc["version"])
            if doc["previous"] is not None:
                validate_version_id(doc["previous"])
            if type(doc["seq"]) is not int:
                raise TypeError("seq is not an int")
        except (ValueError, KeyError, TypeError, StoreError) as e:
            raise self._err(f"{POINTER} is malformed: {e}") from e
        return doc

    def current(self) -> str | None:
        """The published version, None if nothing was ever published."""
        pointer = self._pointer()
        return None if pointer is None else pointer["version"]

    def resolve(self, version: str = "current") -> str:
        """Turn "current" or a version id into the id of a complete version."""
        if version == "current":
            cur = self.current()
            if cur is None:
                raise self._err("no version has been published yet")
            return cur
        if not self._exists(f"{self._vdir(version)}/{MANIFEST}"):
            raise self._err(f"version {version} does not exist or is incomplete (no {MANIFEST})")
        return version

    def history(self) -> list[dict[str, Any]]:
        """Every value CURRENT has held, oldest first."""
        pointer = self._pointer()
        last = 0 if pointer is None else pointer["seq"]
        sel = pafs.FileSelector(self._p(HISTORY_DIR), allow_not_found=True)
        entries = []
        for info in self.fs.get_file_info(sel):
            stem = info.base_name.removesuffix(".json")
            # An entry past CURRENT's seq is from a publish that died before its swap.
            if stem.isdigit() and int(stem) <= last:
                try:
                    entries.append(json.loads(self._read(info.path) or b"null") or {})
                except ValueError as e:
                    raise self._err(f"{HISTORY_DIR}/{info.base_name} is not JSON: {e}") from e
        if any("seq" not in e for e in entries):
            raise self._err(f"{HISTORY_DIR}/ holds an entry without a seq")
        return sorted(entries, key=lambda e: e["seq"])

    # --- the lease on CURRENT -----------------------------------------------------------------

    def _lease_body(self, token: str) -> bytes:
        return _dumps(
            {
                "owner": token,
                "expires_at": time.time() + self.lease_ttl,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )

    def _read_lease(self, path: str | None = None) -> dict[str, Any] | None:
        try:
            doc = self._read_json(path or self._p(LEASE))
            if doc is None:
                return None
            return {**doc, "owner": str(doc["owner"]), "expires_at": float(doc["expires_at"])}
        except (ValueError, KeyError, TypeError):
            # Leases are written whole, so a garbled one was not written by a publisher.
            return {"owner": None, "expires_at": 0.0}

    def _wait_for(self, held: dict[str, Any] | None, deadline: float) -> None:
        if time.monotonic() > deadline:
            who = held and f"{held.get('host')} pid {held.get('pid')}"
            raise self._err(f"{LEASE} is held by {who}; gave up after {self.lease_wait:.0f}s")
        time.sleep(random.uniform(0.005, 0.03))

    def _acquire(self, token: str, *, give_up: Callable[[], None] | None = None) -> None:
        """Take the lease on CURRENT, waiting while another holds it; ``give_up`` may raise
        to stop waiting."""
        path = self._p(LEASE)
        deadline = time.monotonic() + self.lease_wait
        while True:
            if self._local:
                if self._link_lease(path, token):
                    return
                held = self._read_lease()
                if held is None:  # released in the meantime
                    continue
                if held["expires_at"] < time.time():
                    self._remove_local_lease(held["owner"])
                    continue
            else:
                held = self._read_lease()
                if held is None or held["owner"] == token or held["expires_at"] < time.time():
                    started = time.monotonic()
                    self._put(path, self._lease_body(token))
                    # A rival that read the lease free just before our write landed needs
                    # about as long as we did to land its own; wait that out (twice, for slack)
                    # before reading back who holds the lease.
                    time.sleep(max(self.lease_settle, 2 * (time.monotonic() - started)))
                    held = self._read_lease()
                    if held is not None and held["owner"] == token:
                        return
            if give_up is not None:
                give_up()
            self._wait_for(held, deadline)

    def _link_lease(self, path: str, token: str) -> bool:
        # link() creates the lease whole and fails if one exists, atomically (NFS included).
        tmp = f"{path}.tmp-{token}"
        try:
            os.makedirs(self.root, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(self._lease_body(token))
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise self._err(f"cannot create {LEASE}: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _remove_local_lease(self, owner: str | None) -> None:
        """Remove the local lease if ``owner`` holds it, without a window to remove another's."""
        path = self._p(LEASE)
        grave = f"{path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return
        moved = self._read_lease(grave)
        if moved is not None and moved["owner"] != owner:
            # Someone took the lease between our read and the rename: give it back.
            with contextlib.suppress(FileExistsError):
                os.link(grave, path)
        os.unlink(grave)

    def _holds(self, token: str) -> bool:
        held = self._read_lease()
        return held is not None and held["owner"] == token and held["expires_at"] > time.time()

    def _release(self, token: str) -> None:
        if self._local:
            self._remove_local_lease(token)
        elif self._holds(token):
            # An expired lease is a free one. Overwriting takes one request; a delete takes
            # more, as pyarrow re-creates the parent "directory" marker after it.
            self._put(self._p(LEASE), _dumps({"owner": token, "expires_at": 0.0}))

    # --- publishing ---------------------------------------------------------------------------

    def _step(self, name: str) -> None:
        if self.crash_at == name:
            raise SimulatedCrash(f"simulated crash at publish step {name!r}")

    def publish(self, version: str, *, expect_current: str | object | None = ANY) -> None:
        """Make ``version`` current, if CURRENT still names what it named when we looked.

        ``expect_current`` is the version CURRENT must name (None: nothing published); by
        default the value read when publish starts.
        """
        if self.crash_at is not None and self.crash_at not in PUBLISH_STEPS:
            raise ValueError(f"crash_at {self.crash_at!r} is not one of {PUBLISH_STEPS}")
        self._vdir(version)
        self.verify(version)
        check_publishable(self.read_manifest(version))  # a version under its gate stays unseen
        self._step("verified")
        seen = self.current()
        expected = seen if expect_current is ANY else expect_current
        if seen != expected:  # fail early, without taking the lease
            raise self._lost_race(version, expected, seen)

        def check_current() -> None:  # once CURRENT moved, waiting for the lease is pointless
            now = self.current()
            if now != expected:
                raise self._lost_race(version, expected, now)

        token = uuid.uuid4().hex
        self._acquire(token, give_up=check_current)
        self._step("lease_acquired")
        try:
            swapped = self._swap(version, expected, token)
        except SimulatedCrash:
            raise  # a crashed process releases nothing; its lease has to expire
        except BaseException:
            self._release(token)
            raise
        self._release(token)
        if swapped:
            self._step("lease_released")

    def _lost_race(self, version: str, expected: object, actual: str | None) -> StoreError:
        return self._err(
            f"publish {version} lost a race: CURRENT changed from {expected} to {actual}"
        )

    def _check_lease(self, version: str, token: str) -> None:
        if not self._holds(token):
            raise self._err(
                f"publish {version} lost a race for {LEASE}: another publisher took it, or it "
                f"expired (ttl {self.lease_ttl}s)"
            )

    def _swap(self, version: str, expected: object, token: str) -> bool:
        pointer = self._pointer()
        cur = None if pointer is None else pointer["version"]
        if cur != expected:
            raise self._lost_race(version, expected, cur)
        if cur == version:
            return False
        # prune() deletes under the same lease; the version must still be there now.
        if not self._exists(f"{self._vdir(version)}/{MANIFEST}"):
            raise self._err(f"version {version} was deleted while being published")
        seq = 1 if pointer is None else pointer["seq"] + 1
        data = _dumps({"version": version, "previous": cur, "published_at": _now_iso(), "seq": seq})
        # History first: then every value CURRENT ever takes is already recorded.
        self._put(self._p(HISTORY_DIR, f"{seq:012d}.json"), data)
        self._step("history_written")
        # On an object store two publishers can both believe they took the lease (see the
        # module docstring), and a slow one may have outlived its lease: check once more.
        self._check_lease(version, token)
        path = self._p(POINTER)
        if self._local:
            tmp = f"{path}.tmp-{token}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                self._step("tmp_written")
                os.replace(tmp, path)
            except OSError as e:
                raise self._err(f"cannot replace {POINTER}: {e}") from e
        else:
            self._step("tmp_written")  # nothing to stage: a single PUT replaces the object
            self._put(path, data)
        self._step("renamed")
        return True

    def rollback(self, *, to: str | None = None) -> str:
        """Publish ``to``, by default the version that was current before the current one."""
        pointer = self._pointer()
        if pointer is None:
            raise self._err("nothing has been published, there is nothing to roll back")
        target = to if to is not None else pointer["previous"]
        if target is None:
            raise self._err(f"CURRENT ({pointer['version']}) has no previous version")
        self.publish(target, expect_current=pointer["version"])
        return target

    def prune(self, *, keep: int) -> list[str]:
        """Delete complete versions beyond the ``keep`` newest, never the current or previous
        one nor one whose files a kept version references, and incomplete versions untouched
        for a day. Returns the deleted ids."""
        if type(keep) is not int or keep < 0:
            raise self._err(f"prune: keep must be an int >= 0, not {keep!r}")
        token = uuid.uuid4().hex
        self._acquire(token)  # so that no publish swaps to a version we are deleting
        try:
            pointer = self._pointer() or {}
            protected = {pointer.get("version"), pointer.get("previous")}
            found = self._complete()
            complete = [v for v, _ in found]
            doomed = [v for v in complete[: max(0, len(complete) - keep)] if v not in protected]
            # References point at the version that holds the file, never at another reference,
            # so one pass over the survivors finds every version still needed.
            needed = {ref["version"] for v, doc in found if v not in doomed
                      for ref in doc["references"].values()}
            doomed = [v for v in doomed if v not in needed]
            for v in doomed:  # removing the manifest first hides the version at once
                self.fs.delete_file(f"{self._vdir(v)}/{MANIFEST}")
        except OSError as e:
            raise self._err(f"prune: {e}") from e
        finally:
            self._release(token)
        try:
            for v in doomed:
                self.fs.delete_dir(self._vdir(v))
            return doomed + self._prune_leftovers(set(complete))
        except OSError as e:
            raise self._err(f"prune: {e}") from e

    def _prune_leftovers(self, complete: set[str]) -> list[str]:
        cutoff = time.time_ns() - int(STALE_AFTER_S * 1e9)
        removed = []
        sel = pafs.FileSelector(self._p(VERSIONS_DIR), allow_not_found=True)
        for info in self.fs.get_file_info(sel):
            name = info.base_name
            if info.type != pafs.FileType.Directory or name in complete:
                continue
            # A leftover's age is that of its newest file: a build may be writing it now.
            inner = self.fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
            mtimes = [i.mtime_ns for i in [info, *inner] if i.mtime_ns is not None]
            if mtimes and max(mtimes) < cutoff and not self._exists(f"{info.path}/{MANIFEST}"):
                self.fs.delete_dir(info.path)
                removed.append(name)
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True)):
            name = info.base_name
            stale = ".tmp-" in name or ".stale-" in name
            if stale and name.startswith(POINTER) and (info.mtime_ns or cutoff) < cutoff:
                self.fs.delete_file(info.path)
        return removed


def _is_version_id(name: str) -> bool:
    try:
        validate_version_id(name)
    except StoreError:
        return False
    return True


def _local_digest(path: str) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
