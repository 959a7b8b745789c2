"""Garbage collection: old versions, abandoned version folders, and builds' leftovers.

Rules (:meth:`Collector.prune`):

- complete versions beyond the ``keep`` newest go, never the current or previous one nor one
  whose files a kept version references;
- a version folder without a manifest that nobody touched for ``STALE_AFTER_S`` goes (an
  interrupted build), unless its build lock is live;
- a version's build state (``_builds/<v>/``) and work folder (``_work/<v>/``, or the one the
  build recorded) go with the version, and those of failed or abandoned builds once untouched
  for ``build_retention_s``; those a kept version's build left (it died after writing the
  manifest) go at once; never while the build's lock is live, and each is deleted while
  prune holds that build's lock, so no build can start on it meanwhile;
- nothing is read, listed or deleted through a symbolic link inside the store (a linked build
  state folder or history is reported and kept);
- prune refuses, deleting nothing, when CURRENT names a version that is not complete (deciding
  "current and previous" from a wrong pointer deleted the real ones) or when a committed
  version's manifest cannot be read (what it references is unknown).

Deciding, and hiding doomed versions by deleting their manifests, happens under the pointer
lock, which a publish also takes: no version is deleted while it is being published.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from curindex.errors import ConflictError, IntegrityError
from curindex.store.builds import Builds
from curindex.store.io import StoreIO
from curindex.store.layout import MANIFEST, SIGNATURE, Layout, is_version_id
from curindex.store.pointer import Pointer
from curindex.store.versions import Versions

STALE_AFTER_S = 86400.0  # incomplete versions and temp files older than this are garbage
_LOCK_TTL_S = 120.0  # prune's hold on a build lock while it deletes that build's leftovers


@dataclass(frozen=True)
class PruneResult:
    """What prune deleted (with ``dry_run``: what it would delete)."""

    versions: list[str] = field(default_factory=list)  # complete, then abandoned incomplete
    build_states: list[str] = field(default_factory=list)  # version ids of _builds/<v>/
    work_dirs: list[str] = field(default_factory=list)  # paths or URIs
    history_entries: list[str] = field(default_factory=list)  # entries no chain reaches
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why it was kept)
    dry_run: bool = False


@dataclass
class _Plan:
    doomed: list[str]  # complete versions
    stale: list[str]  # incomplete version folders
    builds: list[str]  # versions whose build leftovers go
    work: dict[str, tuple[pafs.FileSystem, str, str]]  # version -> (fs, path, shown)
    states: list[str]
    orphans: list[str]
    skipped: list[tuple[str, str]]
    # builds whose recorded work folder was refused: their record stays, so that a prune
    # given the right work_dir can still find the folder
    keep_record: set[str] = field(default_factory=set)


def _map_work_uri(uri: str) -> str:
    """A Hadoop work URI as pyarrow names the same place."""
    for hadoop in ("s3a://", "s3n://"):
        if uri.startswith(hadoop):
            return "s3://" + uri[len(hadoop):]
    if uri.startswith("file:"):
        rest = uri[len("file:"):]
        if rest.startswith("///") or not rest.startswith("//"):  # not file://host/...
            return "/" + rest.lstrip("/")
    return uri


class Collector:
    def __init__(self, io: StoreIO, layout: Layout, versions: Versions, pointer: Pointer,
                 builds: Builds) -> None:
        self.io, self.layout, self.versions = io, layout, versions
        self.pointer, self.builds = pointer, builds

    def prune(self, *, keep: int, dry_run: bool, build_retention_s: float,
              work_roots: tuple[str, ...] = ()) -> PruneResult:
        if type(keep) is not int or keep < 0:
            raise self.io.err(f"prune: keep must be an int >= 0, not {keep!r}")
        if not isinstance(build_retention_s, int | float) or build_retention_s < 0:
            raise self.io.err(f"prune: build_retention_s must be a number >= 0, not "
                              f"{build_retention_s!r}")
        lock = None if dry_run else self.pointer.lock().acquire(wait_s=self.pointer.lock_wait_s)
        try:
            plan = self._plan(keep, float(build_retention_s), tuple(work_roots))
            if lock is not None:
                lock.check()
                for v in plan.doomed:  # removing the manifest first hides the version at once
                    self.io.delete_file(f"{self.versions.vdir(v)}/{MANIFEST}")
                    self.io.delete_file(f"{self.versions.vdir(v)}/{SIGNATURE}")
        finally:
            if lock is not None:
                lock.release()
        if dry_run:
            return self._result(plan, plan.builds, plan.skipped, dry_run=True)
        for v in plan.doomed + plan.stale:
            self.io.delete_dir(self.versions.vdir(v))
        done, skipped = [], list(plan.skipped)
        for v in plan.builds:
            if self._delete_build(v, plan):
                done.append(v)
            else:
                skipped.append((f"build of version {v}", "its lock was taken meanwhile"))
        for path in plan.orphans:
            self.io.delete_file(path)
        self._sweep_temp_files()
        return self._result(plan, done, skipped, dry_run=False)

    @staticmethod
    def _result(plan: _Plan, builds: list[str], skipped: list[tuple[str, str]], *,
                dry_run: bool) -> PruneResult:
        return PruneResult(
            versions=plan.doomed + plan.stale,
            build_states=[v for v in builds if v in plan.states],
            work_dirs=[plan.work[v][2] for v in builds if v in plan.work],
            history_entries=[p.rsplit("/", 1)[-1] for p in plan.orphans],
            skipped=skipped, dry_run=dry_run)

    def _plan(self, keep: int, retention_s: float, work_roots: tuple[str, ...]) -> _Plan:
        pointer = self.pointer.read()
        if pointer is not None and not self.versions.is_committed(pointer["version"]):
            raise self.io.err(
                f"prune refused: CURRENT names version {pointer['version']}, which does not "
                "exist or is incomplete; publish or roll back to a complete version first "
                "(nothing was deleted)", IntegrityError)
        complete, bad = self.versions.listing()
        if bad:
            raise self.io.err(
                "prune refused: " + "; ".join(f"the manifest of version {v} cannot be read "
                f"({why})" for v, why in bad) + " (nothing was deleted: what it references is "
                "unknown)", IntegrityError)
        protected = {None if pointer is None else pointer[k] for k in ("version", "previous")}
        ids = [v for v, _ in complete]
        doomed = [v for v in ids[: max(0, len(ids) - keep)] if v not in protected]
        # References point at the version that holds the file, never at another reference,
        # so one pass over the survivors finds every version still needed.
        needed = {ref["version"] for v, doc in complete if v not in doomed
                  for ref in doc["references"].values()}
        doomed = [v for v in doomed if v not in needed]
        kept = set(ids) - set(doomed)
        now_ns = time.time_ns()
        skipped: list[tuple[str, str]] = []
        holders: dict[str, bool] = {}

        def live(v: str) -> bool:
            if v not in holders:
                holder = self.builds.holder(v)
                holders[v] = holder is not None and holder.live()
                if holders[v]:
                    skipped.append((f"build of version {v}",
                                    f"its lock is held by {holder.describe()}"))
            return holders[v]

        # Entries of versions/ that are not the store's own folders (symbolic links) are
        # named and left alone: what they point at is not this store's to open or delete.
        refused = dict(self.versions.outside_folders())
        skipped += [(f"version folder {v}", why) for v, why in refused.items()]
        stale = []
        for info in self.io.listdir(self.layout.versions_dir()):
            v = info.base_name
            if (info.type != pafs.FileType.Directory or v in ids or not is_version_id(v)
                    or v in refused):
                continue
            newest = self.io.newest_mtime_ns(info.path)
            if newest is not None and newest < now_ns - STALE_AFTER_S * 1e9 and not live(v):
                stale.append(v)
        candidates = (set(self.builds.state_ids()) | set(self.builds.local_work_ids())
                      | set(doomed) | set(stale) | set(self._lock_ids())) - set(refused)
        builds, states, work, keep_record = [], [], {}, set()
        for v in sorted(candidates):
            if (why := self.io.unconfined(self.builds.state_dir(v))) is not None:
                skipped.append((f"build state folder of version {v}", why))
                continue
            # A kept version's build is over: what it left (it died after writing the manifest)
            # goes now, and why its work folder is kept is said only when something is left.
            finished, reasons = v in kept, []
            location = self._work_location(v, reasons if finished else skipped, work_roots)
            if not finished and v not in doomed and self._touched_since(
                    v, location, now_ns - retention_s * 1e9):
                continue
            record = self.builds.record_path(v)
            has_states = any(i.path != record for i in self.io.listdir(self.builds.state_dir(v)))
            has_work = location is not None and _exists(location[0], location[1])
            if finished and not (has_states or has_work):
                continue
            skipped += reasons
            if live(v):
                continue
            builds.append(v)
            if has_states:
                states.append(v)
            if has_work:
                work[v] = location
            elif location is None and self.io.is_file(record):
                keep_record.add(v)
        try:
            orphans = self.pointer.orphans()
        except IntegrityError as e:
            # A broken history is reported, not repaired: which entries are dead is unknown.
            orphans = []
            skipped.append(("history entries", str(e)))
        return _Plan(doomed, sorted(stale), builds, work, states, orphans, skipped, keep_record)

    def _lock_ids(self) -> list[str]:
        out = []
        for info in self.io.listdir(self.layout.locks_dir()):
            name = info.base_name
            if name.startswith("build-") and name.endswith(".json"):
                v = name[len("build-"):-len(".json")]
                if is_version_id(v):
                    out.append(v)
        return out

    def _touched_since(self, v: str, location: tuple[pafs.FileSystem, str, str] | None,
                       cutoff_ns: float) -> bool:
        times = [self.io.newest_mtime_ns(self.builds.state_dir(v)),
                 self.io.newest_mtime_ns(self.versions.vdir(v))]
        if location is not None and isinstance(location[0], pafs.LocalFileSystem):
            # One level down: Spark adds files inside scores/, which updates that folder's
            # time; a full walk over every chunk would cost more than it tells.
            fs, path = location[0], location[1]
            infos = [fs.get_file_info(path), *fs.get_file_info(
                pafs.FileSelector(path, allow_not_found=True))]
            times += [i.mtime_ns for i in infos if i.mtime_ns is not None]
        known = [t for t in times if t is not None]
        return bool(known) and max(known) >= cutoff_ns

    def _work_location(self, v: str, skipped: list[tuple[str, str]], work_roots: tuple[str, ...]
                       ) -> tuple[pafs.FileSystem, str, str] | None:
        """(filesystem, path, shown name) of the work folder of ``v``'s build, None if none is
        known or it may not be touched (recorded in ``skipped``)."""
        try:
            uri = self.builds.recorded_work_uri(v)
        except IntegrityError as e:  # a damaged record names no folder prune may delete
            skipped.append((f"build record of version {v}", str(e)))
            return None
        if uri is None and not self.io.local:
            return None
        located = (self.io.fs, self.layout.work_dir(v)) if uri is None else \
            self._open_work_uri(uri)
        uri = uri or self.layout.work_dir(v)
        if isinstance(located, str):
            skipped.append((f"work folder {uri} of version {v}", located))
            return None
        fs, path = located
        why = self._unsafe(v, fs, path, work_roots)
        if why:
            skipped.append((f"work folder {uri} of version {v}", why))
            return None
        return fs, path, uri

    def _open_work_uri(self, uri: str) -> tuple[pafs.FileSystem, str] | str:
        """(filesystem, path) of a work folder URI (a Hadoop URI or a local path), or why
        pyarrow cannot open it."""
        mapped = _map_work_uri(uri)
        try:
            if mapped.startswith("/"):
                return pafs.LocalFileSystem(), os.path.normpath(mapped)
            if mapped.startswith("s3://") and not self.io.local and \
                    self.io.uri.startswith("s3://"):
                # The same S3 service as the store (a Hadoop URI carries no endpoint).
                return self.io.fs, mapped[len("s3://"):].rstrip("/")
            fs, path = pafs.FileSystem.from_uri(mapped)
            return fs, path.rstrip("/")
        except (ValueError, OSError) as e:
            return f"pyarrow cannot open it: {e}"

    def _unsafe(self, v: str, fs: pafs.FileSystem, path: str, work_roots: tuple[str, ...]
                ) -> str | None:
        """Why a recorded work folder must not be deleted. A build record is data anyone who
        can write the store can edit, not a command: the folder must be ``<root>/<v>`` for a
        root prune was given (the store's own ``_work/``, or a configured ``[store]
        work_dir``), resolved with its symbolic links, and not itself a link."""
        path = path.rstrip("/")
        if path.rsplit("/", 1)[-1] != v:
            return f"it does not end in /{v}, as a build's work folder does"
        roots: list[tuple[pafs.FileSystem, str]] = []
        if self.io.local:
            roots.append((self.io.fs, self.layout.work_root()))
        for root in work_roots:
            located = self._open_work_uri(root)
            if not isinstance(located, str):
                roots.append(located)
        for fs_root, root in roots:
            if type(fs_root) is not type(fs):
                continue
            io = StoreIO(self.io.uri, fs)
            if io.local and os.path.realpath(path) == os.path.realpath(self.layout.root):
                return "it holds the store"
            why = io.outside(path, root)
            if why is None:
                return None
            if io.local and os.path.islink(path):
                return why
        shown = ", ".join(r for _, r in roots) or "none"
        return (f"it is not under the store's _work/ nor a configured work_dir (work roots: "
                f"{shown}); pass the build's [store] work_dir to prune to remove it")

    def _delete_build(self, v: str, plan: _Plan) -> bool:
        try:
            lock = self.builds.lock(v, ttl_s=_LOCK_TTL_S).acquire()
        except ConflictError:
            return False
        try:
            if v in plan.keep_record:
                self.builds.clear(v)
            else:
                self.io.delete_dir(self.builds.state_dir(v))
            if v in plan.work:
                fs, path, shown = plan.work[v]
                try:
                    fs.delete_dir(path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise self.io.err(f"prune: cannot delete work folder {shown}: {e}") from e
        finally:
            lock.release()
        return True

    def _sweep_temp_files(self) -> None:
        """Temp files of writes that died before their rename, once a day old."""
        cutoff = time.time_ns() - int(STALE_AFTER_S * 1e9)
        for folder in (self.layout.root, self.layout.history_dir(), self.layout.locks_dir()):
            if self.io.unconfined(folder) is not None:
                continue  # a link: reported with the history, or refused by the pointer lock
            for info in self.io.listdir(folder):
                if ".tmp-" in info.base_name and (info.mtime_ns or cutoff) < cutoff:
                    self.io.delete_file(info.path)



def _exists(fs: pafs.FileSystem, path: str) -> bool:
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError:
        return False
