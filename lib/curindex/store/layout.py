"""Where everything lives in a store, and which names are allowed.

Layout under the store root::

    versions/<id>/...              the files of one version, written by the driver and executors
    versions/<id>/manifest.json    written last: a version without it is incomplete and invisible
    versions/<id>/manifest.json.sig  HMAC-SHA256 of the manifest, when a signing key is set
    CURRENT                        {"version", "previous", "published_at", "seq", "previous_seq"}
    history/<seq>.json             every CURRENT value ever written, for audit and rollback
    locks/pointer.json             held by a publish or a prune while it works on CURRENT
    locks/build-<id>.json          held by the build of a version
    _builds/<id>/<stage>.json      a build's stage states (outside the version folder, which
                                   holds only what its manifest lists)
    _builds/<id>/build.json        where the build's work folder is, for garbage collection
    _work/<id>/                    a local store's default work folder (intermediate scores)
"""

from __future__ import annotations

import re

from curindex.errors import StoreError

# \Z, not $: "$" also matches before a trailing newline. Ids must also not contain "..".
VERSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# "current" names the published version wherever a version id is accepted.
RESERVED_IDS = frozenset({"current"})
STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
POINTER = "CURRENT"
HISTORY_DIR = "history"
VERSIONS_DIR = "versions"
LOCKS_DIR = "locks"
BUILDS_DIR = "_builds"
WORK_DIR = "_work"
BUILD_RECORD = "build"  # _builds/<id>/build.json; so "build" is no stage name
POINTER_LOCK = "pointer"


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


def is_version_id(name: str) -> bool:
    try:
        validate_version_id(name)
    except StoreError:
        return False
    return True


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


def validate_stage(stage: str) -> str:
    """Return ``stage`` if it can name a build state document, else raise StoreError."""
    if not isinstance(stage, str) or not STAGE_RE.match(stage) or stage == BUILD_RECORD:
        raise StoreError(
            f"invalid build stage name {stage!r}: use 1-64 letters, digits, '_' and '-', "
            f"not {BUILD_RECORD!r} (which names the build record)"
        )
    return stage


class Layout:
    """Every path of one store, under ``root`` (a path its filesystem understands)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def versions_dir(self) -> str:
        return self.path(VERSIONS_DIR)

    def version_dir(self, version: str) -> str:
        return self.path(VERSIONS_DIR, validate_version_id(version))

    def manifest(self, version: str) -> str:
        return f"{self.version_dir(version)}/{MANIFEST}"

    def signature(self, version: str) -> str:
        return f"{self.version_dir(version)}/{SIGNATURE}"

    def file(self, version: str, rel: str) -> str:
        return f"{self.version_dir(version)}/{validate_relpath(rel)}"

    def pointer(self) -> str:
        return self.path(POINTER)

    def history_dir(self) -> str:
        return self.path(HISTORY_DIR)

    def history_entry(self, seq: int) -> str:
        return self.path(HISTORY_DIR, f"{seq:012d}.json")

    def locks_dir(self) -> str:
        return self.path(LOCKS_DIR)

    def pointer_lock(self) -> str:
        return self.path(LOCKS_DIR, f"{POINTER_LOCK}.json")

    def build_lock(self, version: str) -> str:
        return self.path(LOCKS_DIR, f"build-{validate_version_id(version)}.json")

    def builds_dir(self) -> str:
        return self.path(BUILDS_DIR)

    def build_dir(self, version: str) -> str:
        return self.path(BUILDS_DIR, validate_version_id(version))

    def build_state(self, version: str, stage: str) -> str:
        return f"{self.build_dir(version)}/{validate_stage(stage)}.json"

    def build_record(self, version: str) -> str:
        return f"{self.build_dir(version)}/{BUILD_RECORD}.json"

    def work_root(self) -> str:
        return self.path(WORK_DIR)

    def work_dir(self, version: str) -> str:
        return self.path(WORK_DIR, validate_version_id(version))
