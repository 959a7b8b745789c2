"""A version's shards opened for reading: the faiss indexes (memory-mapped where faiss can), the
extra indexes, and the id maps, read on demand from memory-mapped Arrow files, so opening a
version costs about the same whatever the corpus size.

A faiss label is ``shard << LABEL_SHIFT | row``; row ``row`` of the shard's id map holds the
item's id and text. Versions written before the id maps were Arrow files keep theirs in
Parquet, which is read into memory (as those versions always were).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curindex.config.limits import INT_BOUNDS, MAX_SHARDS, bound_problems
from curindex.errors import IntegrityError, StoreError
from curindex.manifest import Manifest, ServedSearch
from curindex.search.methods import SearchSpec
from curindex.search.shardindex import (
    EXTRAS,
    LABEL_SHIFT,
    RowLabels,
    bad_label,
    drop_id_maps,
    id_map_labels,
    merge_shards,
    read_index,
    set_search_params,
    split_labels,
)
from curindex.store import Store

MAX_BUDGET = INT_BOUNDS["validate", "budgets"][1]  # the largest budget a build measures

_TEXT = (pa.string(), pa.large_string())
_ID_MAP = {"label": (pa.int64(),), "item_id": _TEXT, "text": _TEXT}


def read_id_map(path: str) -> pa.Table:
    """A shard's id map (label, item_id, text): an Arrow IPC file memory-mapped, or, for
    versions written before, a Parquet file read whole. Validated in full before use (every
    offset within its buffer, valid UTF-8; a crafted offset would otherwise read outside
    the mapping and crash the process); the pages this reads are the file's, which the
    kernel can drop. IntegrityError naming the file otherwise."""
    try:
        if path.endswith(".arrow"):
            table = pa.ipc.open_file(pa.memory_map(path)).read_all()
        else:
            table = pq.read_table(path, columns=list(_ID_MAP))
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError, KeyError) as e:
        raise IntegrityError(f"{path}: not a readable id map ({e})") from e
    check_table(table, _ID_MAP, what=path)
    return table


def check_table(table: pa.Table, columns: dict[str, tuple[pa.DataType, ...]], *,
                what: str) -> None:
    """IntegrityError naming `what` unless `table` has `columns` (name -> allowed types),
    none of them with a null."""
    for name, types in columns.items():
        if name not in table.column_names:
            raise IntegrityError(f"{what}: no column {name!r}")
        column = table.column(name)
        if column.type not in types:
            raise IntegrityError(f"{what}: column {name!r} holds {column.type}, not {types[0]}")
        if column.null_count:
            raise IntegrityError(f"{what}: column {name!r} has {column.null_count} nulls")


def read_anchor_items(store: Store, version: str, manifest: Manifest) -> pa.Table:
    """The anchor items (id, text) of a version, checked against its manifest: one per
    dimension of the item vectors (a sparse version: none, its vectors are latent)."""
    rel = manifest.anchors.items_file
    path = store.local_path(version, rel)
    try:
        table = pq.read_table(path)
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise IntegrityError(f"version {version}: {rel}: not readable ({e})") from e
    check_table(table, {"id": _TEXT, "text": _TEXT}, what=f"version {version}: {rel}")
    dim = manifest.anchors.n_items if manifest.sparse is None else manifest.sparse.dim
    if not (table.num_rows == manifest.anchors.n_items and manifest.index.dim == dim):
        raise IntegrityError(f"version {version}: {rel} holds {table.num_rows} anchor items, "
                             f"the manifest says {manifest.anchors.n_items} (item vectors of "
                             f"dimension {manifest.index.dim}, expected {dim})")
    return table


def read_anchor_columns(store: Store, version: str, manifest: Manifest) -> np.ndarray:
    """The anchor items' exact scores against the anchor queries, [k_q, k_i] float64, from
    ``anchors.scores_file`` ([k_i, k_q + n_test]), checked for its shape and finite values."""
    rel, a = manifest.anchors.scores_file, manifest.anchors
    try:
        # memory-mapped: a header claiming more than the file holds fails here, unallocated
        rows = np.load(store.local_path(version, rel), mmap_mode="r", allow_pickle=False)
        ok = (rows.ndim == 2 and rows.shape[0] == a.n_items and rows.shape[1] >= a.n_queries
              and rows.dtype.kind == "f")
        cols = np.array(rows[:, : a.n_queries].T, dtype=np.float64) if ok else None
    except (OSError, ValueError, TypeError) as e:
        raise IntegrityError(f"version {version}: {rel}: not a readable .npy file ({e})") from e
    if cols is None or not np.isfinite(cols).all():
        raise IntegrityError(f"version {version}: {rel}: expected finite floats of shape "
                             f"({a.n_items}, >= {a.n_queries}), got {rows.dtype} {rows.shape}")
    return cols


@dataclass(frozen=True)
class Shard:
    number: int
    index: faiss.Index
    ids: pa.ChunkedArray  # item ids by row
    texts: pa.ChunkedArray  # item texts by row
    extras: dict[str, faiss.Index]  # "x" (the extra index; older versions: "h", "bi")


class VersionShards:
    """Every shard of a version, with one merged searchable index per physical index ("e" the
    item vectors, "x" the extra index; older versions "h" and "bi" apart) and where each
    segment of the extra vectors lies (`layout`: segment -> (physical index, offset, dim))."""

    def __init__(self, shards: Sequence[Shard], *, ivf_in_memory: bool = False,
                 layout: dict[str, tuple[str, int, int]] | None = None) -> None:
        if not shards:
            raise StoreError("a version without shards cannot be searched")
        self.n_items = sum(len(s.ids) for s in shards)
        # One faiss index over every shard, hits merged by score, labels kept (they encode
        # shard and row). IVF shards sharing the build's trained quantizer are coarse-quantized
        # once per query, not once per shard (with `ivf_in_memory`, copied into one in-memory
        # IVF index); others are searched in parallel. Shards whose IDMap only repeats their
        # rows' labels are searched without it (`RowLabels`): no id array per item in RAM.
        numbers = [s.number for s in shards]
        self.indexes: dict[str, faiss.Index | RowLabels] = {}
        for name in ("e", "x", *EXTRAS):
            group = ([s.index for s in shards] if name == "e" else
                     [s.extras[name] for s in shards] if all(name in s.extras for s in shards)
                     else None)
            if group is None:
                continue
            inner = drop_id_maps(group, numbers)
            if inner is None:
                self.indexes[name] = merge_shards(group, in_memory=ivf_in_memory and name == "e")
                continue
            self.indexes[name] = RowLabels(inner, numbers, owners=group)
            shards = [replace(s, index=inner[i]) if name == "e" else
                      replace(s, extras={**s.extras, name: inner[i]})
                      for i, s in enumerate(shards)]
        self.shards = {s.number: s for s in shards}
        self.layout = dict(layout or {})

    def has(self, space: str) -> bool:
        """Whether a search space can be searched: "e", "h", "bi", or "hb" (anchor-query
        scores and bi-encoder embedding side by side, in one index)."""
        if space == "e":
            return True
        if space == "hb":
            h, bi = self.layout.get("h"), self.layout.get("bi")
            return bool(h and bi and h[0] == bi[0] and h[1] + h[2] == bi[1])
        return space in self.layout

    def locate(self, space: str) -> tuple[str, int, int]:
        """(physical index, offset, dim) of a search space."""
        if space == "e":
            return "e", 0, self.indexes["e"].d
        if not self.has(space):
            raise KeyError(space)
        if space == "hb":
            h, bi = self.layout["h"], self.layout["bi"]
            return h[0], h[1], h[2] + bi[2]
        return self.layout[space]

    @classmethod
    def open(cls, store: Store, version: str, manifest: Manifest, *,
             ivf_in_memory: bool = False) -> VersionShards:
        """Every shard of `version`, each file checked against the manifest and the others
        before use (IntegrityError naming it): counts, dimensions, shard numbers, and the
        labels an IDMap stores (IVF lists' labels are checked as they are found, `item`)."""
        _check_layout(version, manifest)
        nprobe, ef = manifest.config.index.nprobe, manifest.config.index.ef_search
        sizes = {e.shard: e.n_items for e in manifest.index.shards}
        shards = []
        for entry in manifest.index.shards:
            index = read_index(store.local_path(version, entry.index))
            set_search_params(index, nprobe=nprobe, ef_search=ef)
            ids = read_id_map(store.local_path(version, entry.ids))
            if index.ntotal != ids.num_rows or ids.num_rows != entry.n_items:
                raise IntegrityError(
                    f"version {version}: shard {entry.index} holds {index.ntotal} vectors and "
                    f"{ids.num_rows} ids, the manifest says {entry.n_items}")
            _check_index(version, entry.index, index, manifest.index.dim, sizes)
            extras = {}
            for name, rel in (("x", entry.extra_index), ("h", entry.h_index),
                              ("bi", entry.bi_index)):
                if rel is not None:
                    extra = read_index(store.local_path(version, rel))
                    if extra.ntotal != entry.n_items:
                        raise IntegrityError(f"version {version}: {rel} holds {extra.ntotal} "
                                             f"vectors, the shard {entry.n_items}")
                    _check_index(version, rel, extra, None, sizes)
                    extras[name] = extra
            shards.append(Shard(entry.shard, index, ids.column("item_id"), ids.column("text"),
                                extras))
        if len({tuple(sorted(s.extras)) for s in shards}) > 1 or \
                len({(n, s.extras[n].d) for s in shards for n in s.extras}) > len(shards[0].extras):
            raise IntegrityError(f"version {version}: its shards' extra indexes differ")
        layout = _layout(manifest, shards)
        if "x" in shards[0].extras and sum(d for _, _, d in layout.values()) != \
                shards[0].extras["x"].d:
            raise IntegrityError(f"version {version}: the extra index's dimension "
                                 f"{shards[0].extras['x'].d} is not its layout's {layout}")
        return cls(shards, ivf_in_memory=ivf_in_memory, layout=layout)

    def _row(self, label: int) -> tuple[Shard, int]:
        shard, row = split_labels(label)
        s = self.shards.get(int(shard))
        if s is None or not 0 <= int(row) < len(s.ids):
            raise IntegrityError(f"label {int(label)} (shard {int(shard)}, row {int(row)}) "
                                 "names no item of this version's shards: a shard's index is "
                                 "damaged")
        return s, int(row)

    def item(self, label: int) -> tuple[str, str]:
        """(id, text) of a faiss label (IntegrityError when it names no item)."""
        s, row = self._row(label)
        return s.ids[row].as_py(), s.texts[row].as_py()

    def labels_of(self, item_ids: Sequence[str]) -> dict[str, int]:
        """The labels of the items of `item_ids` that the shards hold (a vectorised scan of
        the id maps, no Python list of the corpus)."""
        from curindex.search.shardindex import shard_labels

        wanted = pa.array(list(item_ids), type=pa.string())
        out: dict[str, int] = {}
        for s in self.shards.values():
            rows = np.flatnonzero(pc.is_in(s.ids, value_set=wanted).to_numpy(
                zero_copy_only=False))
            labels = shard_labels(s.number, len(s.ids))[rows]
            out.update(zip(s.ids.take(rows).to_pylist(), labels.tolist(), strict=True))
        return out

    def columns(self, labels: Sequence[int]) -> np.ndarray:
        """The stored extra vectors of the items of `labels` from the index holding "h": their
        anchor-query scores, then (in a combined index) their bi-encoder embeddings:
        [len(labels), width]."""
        physical = self.layout["h"][0]
        out = np.empty((len(labels), self.indexes[physical].d), dtype=np.float32)
        for j, label in enumerate(labels):
            s, r = self._row(label)
            out[j] = _inner(s.extras[physical]).reconstruct(r)
        return out

    def all_items(self) -> tuple[list[str], list[str]]:
        """Every item's (ids, texts): the whole corpus in memory (live evaluation only)."""
        ids, texts = [], []
        for s in self.shards.values():
            ids += s.ids.to_pylist()
            texts += s.texts.to_pylist()
        return ids, texts


def check_served(version: str, served: ServedSearch) -> ServedSearch:
    """The served search a manifest records, if it is one a Searcher can run (IntegrityError
    otherwise: a version's default search, not a caller's argument)."""
    try:
        spec = SearchSpec(served.method, served.rounds, served.seed_size)
        ok = spec.seed == served.seed and 1 <= served.budget <= MAX_BUDGET
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise IntegrityError(f"version {version}: the manifest's served search is malformed: "
                             f"{served}")
    return served


def _check_layout(version: str, manifest: Manifest) -> None:
    """The manifest's shard list (distinct shard numbers a label can hold, sane counts) and
    the search settings the shards are opened with."""
    idx = manifest.index
    numbers = [e.shard for e in idx.shards]
    if not numbers:
        raise IntegrityError(f"version {version}: the manifest lists no shards")
    for key, problem in bound_problems("index", manifest.config.index):  # nprobe, ef_search
        raise IntegrityError(f"version {version}: the manifest's [index] {key}: {problem}")
    if idx.label_shift != LABEL_SHIFT or len(set(numbers)) != len(numbers) or not all(
            0 <= n < MAX_SHARDS and 0 <= e.n_items < 1 << LABEL_SHIFT
            for n, e in zip(numbers, idx.shards, strict=True)):
        raise IntegrityError(f"version {version}: the manifest's shard list is malformed "
                             f"(label_shift {idx.label_shift}, shards {numbers[:10]})")


def _check_index(version: str, rel: str, index: faiss.Index, dim: int | None,
                 sizes: dict[int, int]) -> None:
    """An index's dimension (the item vectors': the manifest's), and the labels its IDMap
    holds: each must name a row of a shard (`shardindex.bad_label`)."""
    if dim is not None and index.d != dim:
        raise IntegrityError(f"version {version}: {rel} has dimension {index.d}, the "
                             f"manifest says {dim}")
    labels = id_map_labels(index)
    if labels is not None and (bad := bad_label(labels, sizes)) is not None:
        raise IntegrityError(f"version {version}: {rel} holds label {bad}, which names no "
                             "item of the version's shards")


def _inner(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def _layout(manifest: Manifest, shards: Sequence[Shard]) -> dict[str, tuple[str, int, int]]:
    """Where each segment of the extra vectors lies, from the manifest (older versions: one
    index per segment)."""
    if manifest.index.extra_layout:
        out, offset = {}, 0
        for seg in manifest.index.extra_layout:
            out[seg.name] = ("x", offset, seg.dim)
            offset += seg.dim
        return out
    return {name: (name, 0, shards[0].extras[name].d) for name in EXTRAS
            if all(name in s.extras for s in shards)}
