"""The :class:`Store`: one index store, and the API the pipeline, the Searcher and the CLI use.
It holds no logic of its own beyond opening; each concern lives in its module."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs

from curindex.errors import StoreError, StoreNotFoundError, VersionNotFoundError
from curindex.store.builds import Builds
from curindex.store.cas import cas_for
from curindex.store.gc import Collector, PruneResult
from curindex.store.io import StoreIO
from curindex.store.layout import Layout
from curindex.store.lock import Lock
from curindex.store.pointer import ANY, PUBLISH_STEPS, Pointer, SimulatedCrash
from curindex.store.versions import FileEntry, Versions


class Store:
    """One index store, opened from a URI or a local path. Pickles as its URI.

    ``crash_at`` (a name in :data:`PUBLISH_STEPS`) and ``on_publish_step`` (called with each
    step's name) are test hooks of :meth:`set_current`.
    """

    def __init__(self, uri: str, fs: pafs.FileSystem, root: str) -> None:
        self.uri, self.fs, self.root = uri, fs, root
        self.crash_at: str | None = None
        self.on_publish_step: Callable[[str], None] | None = None
        self._io = StoreIO(uri, fs, root)
        self._layout = Layout(root)
        self._cas = cas_for(self._io, root)
        self._versions = Versions(self._io, self._layout)
        self._pointer = Pointer(self._io, self._layout, self._cas, self._versions)
        self._builds = Builds(self._io, self._layout, self._cas)
        self._gc = Collector(self._io, self._layout, self._versions, self._pointer,
                             self._builds)

    @classmethod
    def open(cls, uri: str, *, create: bool = False) -> Store:
        """Open ``uri``: a local path, or anything ``pyarrow.fs.FileSystem.from_uri`` opens.

        A store that does not exist (no folder; on an object store nothing under the prefix)
        raises :class:`StoreNotFoundError`, unless ``create`` (builds) makes it.
        """
        store = cls._attach(uri)
        info = store._io.info(store.root)
        if info.type == pafs.FileType.NotFound:
            if not create:
                raise StoreNotFoundError(f"store {store.uri} does not exist (nothing at "
                                         f"{store.root}); a build creates it")
            try:
                store.fs.create_dir(store.root, recursive=True)
            except OSError as e:
                raise StoreError(f"cannot create store {store.uri}: {e}") from e
        elif info.type != pafs.FileType.Directory:
            raise StoreError(f"store {store.uri}: {store.root} is a file, not a store folder")
        return store

    @classmethod
    def _attach(cls, uri: str) -> Store:
        """The store at ``uri``, without checking that it exists (an unpickled store was
        opened, and maybe created, where it was pickled)."""
        if not isinstance(uri, str) or not uri.strip():
            raise StoreError(f"store uri {uri!r} is empty")
        uri = uri.strip()
        if "://" not in uri:
            path = os.path.abspath(os.path.expanduser(uri))
            return cls(path, pafs.LocalFileSystem(), path)
        opened = uri
        if uri.startswith("s3://") and "allow_delayed_open" not in uri:
            # Small objects (pointers, locks, manifests) then take one PUT, not a
            # three-request multipart upload.
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
        return (Store._attach, (self.uri,))

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # --- versions -----------------------------------------------------------------------------

    def begin_version(self, version: str) -> None:
        """Start writing ``version``, removing what a crashed attempt at the same id left."""
        self._versions.begin(version)

    def write_bytes(self, version: str, rel: str, data: bytes) -> FileEntry:
        return self._versions.write_bytes(version, rel, data)

    def upload_file(self, version: str, rel: str, local_path: str) -> FileEntry:
        """Copy a local file into the version, hashing it on the way."""
        return self._versions.upload_file(version, rel, local_path)

    def commit_version(self, version: str, body: dict[str, Any], files: list[FileEntry],
                       references: dict[str, str] | None = None,
                       created_at: str | None = None) -> dict[str, Any]:
        """Write the manifest (``body`` plus version, files, references, created_at: now unless
        given), which makes the version complete; returns what was written.

        ``references`` maps relative paths this version uses but does not hold to the committed
        version that holds each (not itself a reference there); their sizes and sha256s are
        taken from that version's manifest.
        """
        return self._versions.commit(version, body, files, references, created_at)

    def read_manifest(self, version: str) -> dict[str, Any]:
        """The manifest of a complete version (VersionNotFoundError if it is not one,
        IntegrityError if it cannot be read)."""
        return self._versions.read_manifest(version)

    def read_bytes(self, version: str, rel: str) -> bytes:
        return self._versions.read_bytes(version, rel)

    def open_input(self, version: str, rel: str) -> Any:
        """A random-access reader (``pyarrow.NativeFile``) of a file of the version, followed to
        the version holding it when referenced."""
        return self._versions.open_input(version, rel)

    def local_path(self, version: str, rel: str, *, cache_dir: str | None = None) -> str:
        """A local path to the file (followed to the version holding it when referenced): the
        file itself on a local store, else a copy checked against the manifest."""
        return self._versions.local_path(version, rel, cache_dir)

    def holder(self, version: str, rel: str) -> str:
        """The version that holds ``rel`` for ``version``: itself, or the one it references."""
        return self._versions.holder(version, rel)

    def has_file(self, version: str, rel: str, size: int) -> bool:
        """Whether an uncommitted version holds `rel` with this size (a resumed build's check
        that an earlier stage's outputs are still there)."""
        return self._versions.has_file(version, rel, size)

    def verify(self, version: str) -> None:
        """Check every file of the manifest, and every file it references in an older version:
        present, right size, right sha256 (IntegrityError naming the first that is not)."""
        self._versions.verify(version)

    def list_versions(self) -> list[str]:
        """Complete versions whose manifests read, oldest first (see :meth:`versions_listing`
        for the others)."""
        return [v for v, _ in self._versions.listing()[0]]

    def versions_listing(self) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
        """(complete versions with their manifests, oldest first; versions whose manifest
        cannot be read, with the reason)."""
        return self._versions.listing()

    # --- the published version ----------------------------------------------------------------

    def pointer(self) -> dict[str, Any] | None:
        """The CURRENT document (version, previous, seq, ...), None if nothing was published."""
        return self._pointer.read()

    def current(self) -> str | None:
        """The published version, None if nothing was ever published."""
        return self._pointer.current()

    def resolve(self, version: str = "current") -> str:
        """Turn "current" or a version id into the id of a complete version."""
        if version == "current":
            cur = self.current()
            if cur is None:
                raise self._io.err("no version has been published yet", VersionNotFoundError)
            return cur
        return self._versions.resolve(version)

    def history(self) -> list[dict[str, Any]]:
        """Every value CURRENT has held, oldest first."""
        return self._pointer.history()

    @property
    def pointer_lock_ttl_s(self) -> float:
        """How long a publish's or a prune's hold on CURRENT outlives a crash of its holder."""
        return self._pointer.lock_ttl_s

    @pointer_lock_ttl_s.setter
    def pointer_lock_ttl_s(self, value: float) -> None:
        self._pointer.lock_ttl_s = value

    def _step(self, name: str) -> None:
        if self.on_publish_step is not None:
            self.on_publish_step(name)
        if self.crash_at == name:
            raise SimulatedCrash(f"simulated crash at publish step {name!r}")

    def set_current(self, version: str, *, expect_current: str | Any | None = ANY) -> None:
        """Verify ``version``, then make it current if CURRENT still names ``expect_current``
        (None: nothing published; by default the value read when this starts). A lost race
        raises :class:`ConflictError`. The quality gate is not checked here: publish through
        :func:`curindex.ops.publish.publish_version`."""
        if self.crash_at is not None and self.crash_at not in PUBLISH_STEPS:
            raise ValueError(f"crash_at {self.crash_at!r} is not one of {PUBLISH_STEPS}")
        self._pointer.set_current(version, expect_current=expect_current, step=self._step)

    # --- builds -------------------------------------------------------------------------------

    def save_build_state(self, version: str, stage: str, doc: dict[str, Any]) -> None:
        """Write ``_builds/<version>/<stage>.json`` whole (readers see all of it or none)."""
        self._builds.save(version, stage, doc)

    def load_build_state(self, version: str, stage: str) -> dict[str, Any] | None:
        """A stage's saved state, None if it saved none."""
        return self._builds.load(version, stage)

    def clear_build_state(self, version: str) -> None:
        """Remove the stage states of ``version``'s build (its work record stays)."""
        self._builds.clear(version)

    def forget_build(self, version: str) -> None:
        """Remove everything ``_builds/<version>/`` holds, the work folder's record included:
        for a build whose work folder is removed (a committed version's)."""
        self._builds.forget(version)

    def build_state_dir(self, version: str) -> str:
        return self._builds.state_dir(version)

    def default_work_dir(self, version: str) -> str:
        """``<root>/_work/<version>`` for a local store; a non-local store has none (the
        caller gives a Hadoop URI, and records it with :meth:`record_build`)."""
        return self._builds.default_work_dir(version)

    def record_build(self, version: str, work_uri: str) -> None:
        """Record where the build of ``version`` keeps its work folder, so that prune can
        remove it with the build (``s3a://``, ``file:`` and local paths are understood)."""
        self._builds.record(version, work_uri)

    def build_lock(self, version: str, *, ttl_s: float = 600.0,
                   heartbeat: bool = True) -> Lock:
        """The lock of ``version``'s build (not yet taken): ``with store.build_lock(v):``, or
        ``acquire()``, ``check()`` and ``release()``. Taking it fails at once with
        :class:`ConflictError` naming the holder while another live holder has it. While held,
        a daemon thread renews it every ``ttl_s / 3``; without ``heartbeat`` the holder calls
        ``renew()`` itself."""
        return self._builds.lock(version, ttl_s=ttl_s, heartbeat=heartbeat)

    def prune(self, *, keep: int, dry_run: bool = False, build_retention_s: float = 86400.0,
              work_roots: tuple[str, ...] | list[str] = ()) -> PruneResult:
        """Delete old versions and builds' leftovers (the rules: :mod:`curindex.store.gc`);
        with ``dry_run``, only say what would go. A build's work folder is deleted only when
        it lies under the store's ``_work/`` or under one of ``work_roots`` (the builds'
        ``[store] work_dir``); any other recorded folder is reported and kept."""
        if isinstance(work_roots, str):
            raise TypeError("work_roots must be a sequence of URIs, not one string")
        return self._gc.prune(keep=keep, dry_run=dry_run, build_retention_s=build_retention_s,
                              work_roots=tuple(r for r in work_roots if r))
