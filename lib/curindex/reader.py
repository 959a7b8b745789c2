"""A version's shards opened for reading: the faiss indexes (memory-mapped where faiss can), the
extra indexes, and the id maps, read on demand from memory-mapped Arrow files, so opening a
version costs about the same whatever the corpus size.

A faiss label is ``shard << LABEL_SHIFT | row``; row ``row`` of the shard's id map holds the
item's id and text. Versions written before the id maps were Arrow files keep theirs in
Parquet, which is read into memory (as those versions always were).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curindex.errors import StoreError
from curindex.manifest import Manifest
from curindex.shardindex import EXTRAS, merge_shards, read_index, set_search_params, split_labels
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
    extras: dict[str, faiss.Index]  # "h", "bi": same labels


class VersionShards:
    """Every shard of a version, with one merged searchable index per space."""

    def __init__(self, shards: Sequence[Shard], *, ivf_in_memory: bool = False) -> None:
        if not shards:
            raise StoreError("a version without shards cannot be searched")
        self.shards = {s.number: s for s in shards}
        self.n_items = sum(len(s.ids) for s in shards)
        # One faiss index over every shard, hits merged by score, labels kept (they encode
        # shard and row). IVF shards sharing the build's trained quantizer are coarse-quantized
        # once per query, not once per shard (with `ivf_in_memory`, copied into one in-memory
        # IVF index); others are searched in parallel.
        self.spaces = {"e": merge_shards([s.index for s in shards], in_memory=ivf_in_memory)}
        for name in EXTRAS:
            if all(name in s.extras for s in shards):
                self.spaces[name] = merge_shards([s.extras[name] for s in shards])

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
            for name in EXTRAS:
                if (rel := entry.extra(name)) is not None:
                    extra = read_index(store.local_path(version, rel))
                    if extra.ntotal != entry.n_items:
                        raise StoreError(f"version {version}: {rel} holds {extra.ntotal} "
                                         f"vectors, the shard {entry.n_items}")
                    extras[name] = extra
            shards.append(Shard(entry.shard, index, ids.column("item_id"), ids.column("text"),
                                extras))
        return cls(shards, ivf_in_memory=ivf_in_memory)

    def item(self, label: int) -> tuple[str, str]:
        """(id, text) of a faiss label."""
        shard, row = split_labels(label)
        s = self.shards[int(shard)]
        return s.ids[int(row)].as_py(), s.texts[int(row)].as_py()

    def labels_of(self, item_ids: Sequence[str]) -> dict[str, int]:
        """The labels of the items of `item_ids` that the shards hold (a vectorised scan of
        the id maps, no Python list of the corpus)."""
        from curindex.shardindex import shard_labels

        wanted = pa.array(list(item_ids), type=pa.string())
        out: dict[str, int] = {}
        for s in self.shards.values():
            rows = np.flatnonzero(pc.is_in(s.ids, value_set=wanted).to_numpy(
                zero_copy_only=False))
            labels = shard_labels(s.number, len(s.ids))[rows]
            out.update(zip(s.ids.take(rows).to_pylist(), labels.tolist(), strict=True))
        return out

    def columns(self, labels: Sequence[int]) -> np.ndarray:
        """Anchor-query scores of the items of `labels`, as stored: [len(labels), k_q]."""
        shard, row = split_labels(np.asarray(labels, dtype=np.int64))
        out = np.empty((len(labels), self.spaces["h"].d), dtype=np.float32)
        for j, (s, r) in enumerate(zip(shard, row, strict=True)):
            out[j] = _inner(self.shards[int(s)].extras["h"]).reconstruct(int(r))
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
