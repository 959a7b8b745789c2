"""Versions: written file by file, committed by their manifest, then immutable.

A committed version may also *reference* files of an older one (an incremental build shares the
shards it did not change): its manifest's ``references`` map a relative path to the version that
holds the file, with its size and sha256. Reading, verifying and downloading follow references.

When ``CURINDEX_MANIFEST_KEY`` is set, commit writes an HMAC-SHA256 of the manifest bytes beside
it (``manifest.json.sig``, written first), and every manifest read refuses one without a
signature or with a wrong one: whoever can write the store but lacks the key cannot forge one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs

import curindex.store.io as store_io
from curindex.errors import (
    ConflictError,
    IntegrityError,
    StoreError,
    VersionNotFoundError,
)
from curindex.store.io import StoreIO, dumps, loads
from curindex.store.layout import (
    MANIFEST,
    SIGNATURE,
    Layout,
    is_version_id,
    validate_relpath,
)

KEY_ENV = "CURINDEX_MANIFEST_KEY"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    """One file of a version, as written: path relative to the version folder."""

    path: str
    size: int
    sha256: str


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _signing_key() -> bytes | None:
    key = os.environ.get(KEY_ENV)
    return key.encode() if key else None


def _sign(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).hexdigest().encode()


def check_envelope(doc: Any, version: str) -> dict[str, Any]:
    """The manifest ``doc`` of ``version`` with its envelope checked (version, files,
    references, created_at); raises IntegrityError (without the store's name) otherwise."""
    where = f"version {version}: {MANIFEST}"

    def rel_ok(rel: str) -> None:
        try:
            validate_relpath(rel)
        except StoreError as e:
            raise IntegrityError(f"version {version}: {MANIFEST}: {e}") from None

    if not isinstance(doc, dict) or doc.get("version") != version:
        raise IntegrityError(f"{where} is not a manifest of this version")
    files = doc.get("files")
    if not isinstance(files, dict) or not isinstance(doc.get("created_at"), str):
        raise IntegrityError(f"{where} lacks 'files' or 'created_at'")
    for rel, entry in files.items():
        rel_ok(rel)
        if (
            not isinstance(entry, dict)
            or type(entry.get("size")) is not int
            or entry["size"] < 0
            or not _SHA256_RE.match(str(entry.get("sha256")))
        ):
            raise IntegrityError(f"{where}: file {rel} needs an int size and a sha256")
    refs = doc.setdefault("references", {})
    if not isinstance(refs, dict) or not all(
        isinstance(e, dict) and is_version_id(str(e.get("version"))) for e in refs.values()
    ):
        raise IntegrityError(f"{where}: 'references' must map paths to {{version, size, sha256}}")
    for rel in refs:
        rel_ok(rel)
    return doc


class Versions:
    """Writing, committing, reading and verifying the versions of one store."""

    def __init__(self, io: StoreIO, layout: Layout) -> None:
        self.io, self.layout = io, layout
        self._refs: dict[str, dict[str, Any]] = {}  # committed versions' references

    def vdir(self, version: str) -> str:
        try:
            return self.layout.version_dir(version)
        except StoreError as e:
            raise self.io.err(str(e)) from None

    def folder(self, version: str, rel: str = "") -> str:
        """The folder of ``version`` (or its file ``rel``) to read or delete: on a local store
        a real folder under ``versions/`` (no symbolic link on the way, not resolving
        elsewhere), else IntegrityError: what a link points at is not this store's."""
        vdir = self.vdir(version)
        why = self.io.outside(vdir, self.layout.versions_dir()) if self.io.local else None
        if why is not None:
            raise self.io.err(f"version folder {vdir} is refused: {why}", IntegrityError)
        return self.io.confine(f"{vdir}/{rel}" if rel else vdir)

    def outside_folders(self) -> list[tuple[str, str]]:
        """(version folder name, why) of the entries of ``versions/`` that are not this store's
        own folders (local stores: symbolic links); listing, pruning and reading skip them."""
        if not self.io.local:
            return []
        out = []
        for info in self.io.listdir(self.layout.versions_dir()):
            why = self.io.outside(info.path, self.layout.versions_dir())
            if why is not None:
                out.append((info.base_name, why))
        return sorted(out)

    def _rel(self, version: str, rel: str) -> str:
        try:
            return validate_relpath(rel)
        except StoreError as e:
            raise self.io.err(f"version {version}: {e}") from None

    def is_committed(self, version: str) -> bool:
        return self.io.is_file(f"{self.vdir(version)}/{MANIFEST}")

    # --- writing ------------------------------------------------------------------------------

    def _refuse_committed(self, version: str) -> str:
        if self.is_committed(version):
            raise self.io.err(f"version {version} is committed and immutable", ConflictError)
        return self.vdir(version)

    def _file_path(self, version: str, rel: str) -> str:
        self._rel(version, rel)
        if rel in (MANIFEST, SIGNATURE):
            raise self.io.err(f"version {version}: {rel} is written by commit_version only")
        return f"{self._refuse_committed(version)}/{rel}"

    def begin(self, version: str) -> None:
        vdir = self.vdir(version)
        inside = self.io.listdir(vdir, recursive=True)
        if any(info.path == f"{vdir}/{MANIFEST}" for info in inside):
            raise self.io.err(f"version {version} is committed and immutable", ConflictError)
        if inside:
            self.io.delete_dir(vdir)
        if self.io.local:
            os.makedirs(vdir, exist_ok=True)

    def has_file(self, version: str, rel: str, size: int) -> bool:
        try:
            info = self.io.fs.get_file_info(f"{self.vdir(version)}/{self._rel(version, rel)}")
        except OSError as e:
            raise self.io.err(f"version {version}: cannot look at {rel}: {e}") from e
        return info.type == pafs.FileType.File and info.size == size

    def write_bytes(self, version: str, rel: str, data: bytes) -> FileEntry:
        self.io.put(self._file_path(version, rel), data)
        return FileEntry(rel, len(data), hashlib.sha256(data).hexdigest())

    def upload_file(self, version: str, rel: str, local_path: str) -> FileEntry:
        path = self._file_path(version, rel)
        size, sha = self.io.upload(local_path, path, f"version {version}")
        return FileEntry(rel, size, sha)

    def commit(self, version: str, body: dict[str, Any], files: list[FileEntry],
               references: dict[str, str] | None = None, created_at: str | None = None
               ) -> dict[str, Any]:
        vdir = self._refuse_committed(version)
        if not isinstance(body, dict):
            raise self.io.err(f"version {version}: manifest must be a dict, not {type(body)}")
        listed: dict[str, dict[str, Any]] = {}
        for e in files:
            if not _SHA256_RE.match(str(e.sha256)):
                raise self.io.err(f"version {version}: file {e.path}: {e.sha256!r} is no sha256")
            entry = {"size": int(e.size), "sha256": e.sha256}
            if listed.setdefault(self._rel(version, e.path), entry) != entry:
                raise self.io.err(f"version {version}: file {e.path} is listed twice, differently")
        names = sorted(listed)
        try:
            infos = self.io.fs.get_file_info([f"{vdir}/{rel}" for rel in names])
        except OSError as e:
            raise self.io.err(f"version {version}: cannot look at its files: {e}") from e
        for rel, info in zip(names, infos, strict=True):
            if info.type != pafs.FileType.File:
                raise self.io.err(f"version {version}: file {rel} is missing", IntegrityError)
            if info.size != listed[rel]["size"]:
                raise self.io.err(
                    f"version {version}: file {rel}: size {info.size} != {listed[rel]['size']}"
                    " (stored != listed)", IntegrityError)
        refs = {}
        for rel, holder in sorted((references or {}).items()):
            self._rel(version, rel)
            if rel in listed:
                raise self.io.err(f"version {version}: file {rel} is both held and referenced")
            entry = self.read_manifest(holder)["files"].get(rel)
            if entry is None:
                raise self.io.err(f"version {version}: referenced file {rel} is not held by "
                                  f"version {holder}")
            refs[rel] = {"version": holder, **entry}
        doc = {**body, "version": version, "files": {rel: listed[rel] for rel in names},
               "references": refs, "created_at": created_at or now_iso()}
        try:
            data = dumps(doc)
        except (TypeError, ValueError) as e:
            raise self.io.err(f"version {version}: manifest is not JSON: {e}") from e
        if (key := _signing_key()) is not None:
            # The signature first: a manifest is never visible without it.
            self.io.put(f"{vdir}/{SIGNATURE}", _sign(key, data))
        self.io.put(f"{vdir}/{MANIFEST}", data)
        return doc

    # --- reading ------------------------------------------------------------------------------

    def manifest(self, version: str) -> dict[str, Any] | None:
        """The checked manifest, None when the version is not committed."""
        vdir = self.folder(version)
        data = self.io.read(f"{vdir}/{MANIFEST}", limit=store_io.MAX_JSON_BYTES)
        if data is None:
            return None
        if (key := _signing_key()) is not None:
            sig = self.io.read(f"{vdir}/{SIGNATURE}", limit=store_io.MAX_SMALL_JSON_BYTES)
            if sig is None:
                raise self.io.err(f"version {version}: {MANIFEST} has no signature "
                                  f"({KEY_ENV} is set)", IntegrityError)
            if not hmac.compare_digest(sig.strip(), _sign(key, data)):
                raise self.io.err(f"version {version}: {MANIFEST}: signature does not match "
                                  f"(not signed with the key in {KEY_ENV})", IntegrityError)
        try:
            return check_envelope(loads(data), version)
        except ValueError as e:
            raise self.io.err(f"version {version}: {MANIFEST} is not JSON that curindex "
                              f"reads: {e}", IntegrityError) from e
        except IntegrityError as e:
            raise self.io.err(str(e), IntegrityError) from None

    def read_manifest(self, version: str) -> dict[str, Any]:
        doc = self.manifest(version)
        if doc is None:
            raise self.io.err(f"version {version} does not exist or is incomplete "
                              f"(no {MANIFEST})", VersionNotFoundError)
        return doc

    def resolve(self, version: str) -> str:
        if not self.is_committed(version):
            raise self.io.err(f"version {version} does not exist or is incomplete "
                              f"(no {MANIFEST})", VersionNotFoundError)
        return version

    def listing(self) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
        """Complete versions with their manifests, oldest first, and the versions whose
        manifest exists but cannot be read, with the reason."""
        found, bad = [], []
        refused = {name for name, _ in self.outside_folders()}
        for info in self.io.listdir(self.layout.versions_dir()):
            name = info.base_name
            if (info.type != pafs.FileType.Directory or not is_version_id(name)
                    or name in refused):
                continue
            try:
                doc = self.manifest(name)
            except StoreError as e:
                bad.append((name, str(e)))
                continue
            if doc is not None:
                found.append((name, doc))
        return sorted(found, key=lambda vm: (vm[1]["created_at"], vm[0])), sorted(bad)

    def holder(self, version: str, rel: str) -> str:
        """The version that holds ``rel`` for ``version``: itself, or the one it references."""
        refs = self._refs.get(version)
        if refs is None:  # a committed manifest never changes: read it once per Store
            doc = self.manifest(version)
            if doc is None:
                return version  # not committed (yet): it holds all its files
            refs = self._refs[version] = doc["references"]
        return refs[rel]["version"] if rel in refs else version

    def _missing(self, version: str, rel: str) -> StoreError:
        # A file its committed manifest lists is damage; one of a version being written is not.
        cls = IntegrityError if version in self._refs else StoreError
        return self.io.err(f"version {version}: file {rel} is missing", cls)

    def read_bytes(self, version: str, rel: str) -> bytes:
        holder = self.holder(version, rel)
        data = self.io.read(f"{self.folder(holder)}/{self._rel(holder, rel)}")
        if data is None:
            raise self._missing(holder, rel)
        return data

    def open_input(self, version: str, rel: str) -> Any:
        holder = self.holder(version, rel)
        try:
            return self.io.fs.open_input_file(self.folder(holder, self._rel(holder, rel)))
        except FileNotFoundError:
            raise self._missing(holder, rel) from None
        except OSError as e:
            raise self.io.err(f"version {holder}: cannot read {rel}: {e}") from e

    def local_path(self, version: str, rel: str, cache_dir: str | None) -> str:
        holder = self.holder(version, rel)
        path = self.folder(holder, self._rel(holder, rel))
        if self.io.local:
            if not os.path.isfile(path):
                raise self._missing(holder, rel)
            return path
        entry = self.read_manifest(holder)["files"].get(rel)
        if entry is None:
            raise self.io.err(f"version {holder}: file {rel} is not in the manifest")
        if cache_dir is None:
            key = hashlib.sha256(self.io.uri.encode()).hexdigest()[:16]
            cache_dir = os.path.join(tempfile.gettempdir(), f"curindex-store-{key}")
        dest = os.path.join(cache_dir, holder, *rel.split("/"))
        return self.io.download(path, dest, entry["size"], entry["sha256"],
                                f"version {holder}: file {rel}")

    def verify(self, version: str) -> None:
        doc = self.read_manifest(version)
        wanted = [(version, rel, want) for rel, want in sorted(doc["files"].items())]
        for rel, ref in sorted(doc["references"].items()):
            if not self.is_committed(ref["version"]):
                raise self.io.err(f"version {version}: file {rel} references version "
                                  f"{ref['version']}, which is gone", IntegrityError)
            wanted.append((ref["version"], rel, ref))
        try:
            infos = self.io.fs.get_file_info([f"{self.folder(v)}/{rel}" for v, rel, _ in wanted])
        except OSError as e:
            raise self.io.err(f"version {version}: cannot look at its files: {e}") from e
        for (holder, rel, want), info in zip(wanted, infos, strict=True):
            shown = rel if holder == version else f"{rel} (held by version {holder})"
            problem = None
            if info.type != pafs.FileType.File:
                problem = "is missing"
            elif info.size != want["size"]:
                problem = f": size {info.size} != {want['size']} (stored != manifest)"
            elif self.io.hash(f"{self.vdir(holder)}/{rel}")[1] != want["sha256"]:
                problem = ": sha256 mismatch"
            if problem:
                sep = "" if problem.startswith(":") else " "
                raise self.io.err(f"version {version}: file {shown}{sep}{problem}",
                                  IntegrityError)
