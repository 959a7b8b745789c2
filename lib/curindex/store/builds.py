"""What a build keeps in the store besides its version: stage states (``_builds/<v>/``), the
record of its work folder, and its lock (``locks/build-<v>.json``).

The lock lives outside ``_builds/<v>/`` so that clearing a build's states never drops it.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pyarrow.fs as pafs

from curindex.errors import IntegrityError, StoreError
from curindex.store.cas import Cas
from curindex.store.io import MAX_SMALL_JSON_BYTES, StoreIO, dumps
from curindex.store.layout import BUILD_RECORD, Layout, is_version_id
from curindex.store.lock import Holder, Lock, read_holder
from curindex.store.versions import now_iso


class Builds:
    """Build states, work folder records and build locks of one store."""

    def __init__(self, io: StoreIO, layout: Layout, cas: Cas) -> None:
        self.io, self.layout, self.cas = io, layout, cas

    def _path(self, fn: Any, *args: str) -> str:
        try:
            return fn(*args)
        except StoreError as e:
            raise self.io.err(str(e)) from None

    def state_dir(self, version: str) -> str:
        return self._path(self.layout.build_dir, version)

    def save(self, version: str, stage: str, doc: dict[str, Any]) -> None:
        """Write a stage's state whole (a reader sees all of it or the old one)."""
        path = self._path(self.layout.build_state, version, stage)
        try:
            data = json.dumps(doc, sort_keys=True).encode()
        except (TypeError, ValueError) as e:
            raise self.io.err(f"version {version}: build state {stage!r} is not JSON: {e}") from e
        self.io.put(path, data)

    def load(self, version: str, stage: str) -> dict[str, Any] | None:
        """A stage's state, None when the stage has saved none."""
        path = self._path(self.layout.build_state, version, stage)
        doc = self.io.read_json(path)
        if doc is not None and not isinstance(doc, dict):
            raise self.io.err(f"version {version}: build state {stage!r} ({path}) is not a JSON "
                              "object", IntegrityError)
        return doc

    def clear(self, version: str) -> None:
        """Remove the stage states; the build record stays, since the work folder it names may
        still hold data that garbage collection must find."""
        record = self._path(self.layout.build_record, version)
        for info in self.io.listdir(self.state_dir(version)):
            if info.path == record:
                continue
            if info.type == pafs.FileType.Directory:
                self.io.delete_dir(info.path)
            else:
                self.io.delete_file(info.path)

    def forget(self, version: str) -> None:
        """Remove the build's state folder, record included (its work folder is gone)."""
        self.io.delete_dir(self.state_dir(version))

    def default_work_dir(self, version: str) -> str:
        if not self.io.local:
            raise self.io.err(
                f"version {version}: a store that is not a local path has no default work "
                "folder; give a Hadoop URI Spark can write (e.g. s3a://bucket/work)")
        return self._path(self.layout.work_dir, version)

    def record(self, version: str, work_uri: str) -> None:
        """Record where the build of ``version`` keeps its work folder."""
        if not isinstance(work_uri, str) or not work_uri.strip():
            raise self.io.err(f"version {version}: work folder URI {work_uri!r} is empty")
        path = self._path(self.layout.build_record, version)
        self.io.put(path, dumps({"version": version, "work_uri": work_uri.strip(),
                                 "recorded_at": now_iso(), "host": socket.gethostname(),
                                 "pid": os.getpid()}))

    def record_path(self, version: str) -> str:
        return self._path(self.layout.build_record, version)

    def recorded_work_uri(self, version: str) -> str | None:
        doc = self.io.read_json(self._path(self.layout.build_record, version),
                                limit=MAX_SMALL_JSON_BYTES)
        if doc is None:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("work_uri"), str):
            raise self.io.err(f"version {version}: {BUILD_RECORD}.json has no work_uri",
                              IntegrityError)
        return doc["work_uri"]

    def lock(self, version: str, *, ttl_s: float, heartbeat: bool = True) -> Lock:
        path = self._path(self.layout.build_lock, version)
        return Lock(self.cas, path, name=f"store {self.io.uri}: build lock of version {version}",
                    ttl_s=ttl_s, heartbeat=heartbeat)

    def holder(self, version: str) -> Holder | None:
        """Who holds (or last held, if expired) the build lock of ``version``."""
        return read_holder(self.cas, self._path(self.layout.build_lock, version))

    def state_ids(self) -> list[str]:
        """Versions with a ``_builds/<v>/`` folder."""
        return sorted(i.base_name for i in self.io.listdir(self.layout.builds_dir())
                      if i.type == pafs.FileType.Directory and is_version_id(i.base_name))

    def local_work_ids(self) -> list[str]:
        """Versions with a ``_work/<v>/`` folder in a local store."""
        if not self.io.local:
            return []
        return sorted(i.base_name for i in self.io.listdir(self.layout.work_root())
                      if i.type == pafs.FileType.Directory and is_version_id(i.base_name))
