"""A versioned index store on any ``pyarrow.fs`` filesystem (local disk, S3, HDFS, ...).

Modules: :mod:`~curindex.store.layout` (ids and every path), :mod:`~curindex.store.io` (the one
I/O layer), :mod:`~curindex.store.versions` (writing, committing, reading, verifying),
:mod:`~curindex.store.cas` (conditional writes, local and S3), :mod:`~curindex.store.lock`
(locks), :mod:`~curindex.store.pointer` (CURRENT and its history), :mod:`~curindex.store.builds`
(build states, work folders, build locks), :mod:`~curindex.store.gc` (prune) and
:mod:`~curindex.store.core` (the :class:`Store` that ties them together).

Publishing with the quality gate is :func:`curindex.ops.publish.publish_version`, outside the store.
Only JSON is ever read back; nothing in the store runs as code.
"""

from curindex.store.core import Store
from curindex.store.gc import PruneResult
from curindex.store.layout import validate_relpath, validate_version_id
from curindex.store.lock import Holder, Lock
from curindex.store.pointer import ANY, PUBLISH_STEPS, SimulatedCrash
from curindex.store.versions import FileEntry

__all__ = [
    "ANY",
    "PUBLISH_STEPS",
    "FileEntry",
    "Holder",
    "Lock",
    "PruneResult",
    "SimulatedCrash",
    "Store",
    "validate_relpath",
    "validate_version_id",
]
