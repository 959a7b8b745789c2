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

from curindex.errors import StoreError
from curindex.manifest import Manifest
from curindex.search.shardindex import (
    EXTRAS,
    RowLabels,
    drop_id_maps,
    merge_shards,
    read_index,
    set_search_params,
    split_labels,
)
from curindex.store import Store


def read_id_map(path: str) -> pa.Table:
    """A shard's id map (label, item_id, text): an Arrow IPC file memory-mapped (nothing read
    until asked), or, for versions written before, a Parquet file read whole."""
    if path.endswith(".arrow"):
        try:
            return pa.ipc.open_file(pa.memory_map(path)).read_all()
        except (pa.ArrowInvalid, OSError) as e:
            raise StoreError(f"{path}: not a readable Arrow id map ({e})") from e
    return pq.read_table(path, columns=["label", "item_id", "text"])


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
        nprobe, ef = manifest.config.index.nprobe, manifest.config.index.ef_search
        shards = []
        for entry in manifest.index.shards:
            index = read_index(store.local_path(version, entry.index))
            set_search_params(index, nprobe=nprobe, ef_search=ef)
            ids = read_id_map(store.local_path(version, entry.ids))
            if index.ntotal != ids.num_rows or ids.num_rows != entry.n_items:
                raise StoreError(
                    f"version {version}: shard {entry.index} holds {index.ntotal} vectors and "
                    f"{ids.num_rows} ids, the manifest says {entry.n_items}")
            extras = {}
            for name, rel in (("x", entry.extra_index), ("h", entry.h_index),
                              ("bi", entry.bi_index)):
                if rel is not None:
                    extra = read_index(store.local_path(version, rel))
                    if extra.ntotal != entry.n_items:
                        raise StoreError(f"version {version}: {rel} holds {extra.ntotal} "
                                         f"vectors, the shard {entry.n_items}")
                    extras[name] = extra
            shards.append(Shard(entry.shard, index, ids.column("item_id"), ids.column("text"),
                                extras))
        return cls(shards, ivf_in_memory=ivf_in_memory, layout=_layout(manifest, shards))

    def item(self, label: int) -> tuple[str, str]:
        """(id, text) of a faiss label."""
        shard, row = split_labels(label)
        s = self.shards[int(shard)]
        return s.ids[int(row)].as_py(), s.texts[int(row)].as_py()

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
        shard, row = split_labels(np.asarray(labels, dtype=np.int64))
        out = np.empty((len(labels), self.indexes[physical].d), dtype=np.float32)
        for j, (s, r) in enumerate(zip(shard, row, strict=True)):
            out[j] = _inner(self.shards[int(s)].extras[physical]).reconstruct(int(r))
        return out

    def all_items(self) -> tuple[list[str], list[str]]:
        """Every item's (ids, texts): the whole corpus in memory (live evaluation only)."""
        ids, texts = [], []
        for s in self.shards.values():
            ids += s.ids.to_pylist()
            texts += s.texts.to_pylist()
        return ids, texts


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
