"""faiss shard layout shared by the build and the Searcher (no Spark here).

A shard is one faiss inner-product index plus a Parquet id map. A faiss label is
``shard << LABEL_SHIFT | row``: row ``row`` of that shard's id map (label, item_id, text).
"""

from __future__ import annotations

import faiss
import numpy as np

from curindex.errors import ConfigError, IntegrityError

LABEL_SHIFT = 40  # up to 2^40 items per shard, 2^23 shards
# The segments of the extra index a shard can carry beside its item vectors, same labels, in
# this order: "h" the items' anchor-query scores (adaptive search re-solves queries on them),
# "bi" their bi-encoder embeddings (bi-encoder search). One index holds every segment a version
# needs, so one inner-product search covers any mix of them (bi-seeded search ranks by both).
EXTRAS = ("h", "bi")


def shard_files(shard: int) -> tuple[str, str]:
    """Paths, relative to the version folder, of a shard's index and id map (Arrow IPC)."""
    return f"shards/shard-{shard:05d}.faiss", f"shards/ids-{shard:05d}.arrow"


TRAINED_FILE = "shards/trained.faiss"  # the empty trained index every shard started from
# The faiss factory of the extra indexes per `[index] encoding`: exhaustive inner-product
# search over vectors stored in float32, float16, or 8 bits per dimension (a trained scalar
# quantizer); memory-mapped like Flat (`read_index`).
EXTRA_FACTORIES = {"float32": "IDMap,Flat", "float16": "IDMap,SQfp16", "sq8": "IDMap,SQ8"}


def extra_factory(encoding: str) -> str:
    return EXTRA_FACTORIES[encoding]


EXTRA_TRAINED = "shards/x-trained.faiss"  # the empty trained extra index of every shard


def extra_shard_file(shard: int) -> str:
    """Path of a shard's extra index (the segments of ``EXTRAS`` the version needs)."""
    return f"shards/x-{shard:05d}.faiss"


def scores_shard_file(shard: int) -> str:
    """Path of a shard's kept scores (``[index] keep_scores``): item_id, text, truncated,
    scores, sorted by item id."""
    return f"shards/scores-{shard:05d}.parquet"


def legacy_extra_file(name: str, shard: int) -> str:
    """Where versions written before the combined extra index kept segment `name` alone."""
    return f"shards/{name}-{shard:05d}.faiss"


def shard_labels(shard: int, n: int) -> np.ndarray:
    """Labels of rows 0..n-1 of `shard`."""
    return (np.int64(shard) << LABEL_SHIFT) | np.arange(n, dtype=np.int64)


def split_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard, row) of each faiss label."""
    labels = np.asarray(labels, dtype=np.int64)
    return labels >> LABEL_SHIFT, labels & ((1 << LABEL_SHIFT) - 1)


def bad_label(labels: np.ndarray, sizes: dict[int, int]) -> int | None:
    """The first of `labels` that names no row of the shards (`sizes`: shard number -> its
    row count), or None: a label read from a file must be checked before it indexes a
    shard's id map."""
    labels = np.asarray(labels, dtype=np.int64)
    shard, row = split_labels(labels)
    numbers = np.array(sorted(sizes), dtype=np.int64)
    counts = np.array([sizes[n] for n in sorted(sizes)], dtype=np.int64)
    at = np.clip(np.searchsorted(numbers, shard), 0, max(0, len(numbers) - 1))
    ok = (labels >= 0) & (numbers[at] == shard) & (row < counts[at]) if len(numbers) else \
        np.zeros(len(labels), dtype=bool)
    return None if ok.all() else int(labels[np.argmin(ok)])


def id_map_labels(index: faiss.Index) -> np.ndarray | None:
    """The labels an IDMap index stores (in RAM, where faiss reads them), else None."""
    index = faiss.downcast_index(index)
    return faiss.vector_to_array(index.id_map) if isinstance(index, faiss.IndexIDMap) else None


def empty_index(factory: str, dim: int) -> faiss.Index:
    """A fresh inner-product index for `factory`, wrapped in an IDMap when it cannot store
    ids itself. Raises ConfigError naming the factory string."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        if isinstance(index, faiss.IndexIDMap) or _is_ivf(index):
            return index
        # Through the factory, not faiss.IndexIDMap(index): the wrapper must own the index it
        # wraps, or the inner index is freed with its Python object.
        return faiss.index_factory(dim, "IDMap," + factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ConfigError(f"[index] factory {factory!r}: faiss cannot build it: {e}") from e


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def _inner(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def is_exact(factory: str, dim: int) -> bool:
    """Whether `factory` builds an exhaustive (flat) index, whose search is exact."""
    index = empty_index(factory, dim)  # kept alive while its inner index is inspected
    return isinstance(_inner(index), faiss.IndexFlat)


def set_search_params(index: faiss.Index, *, nprobe: int, ef_search: int) -> None:
    """Query-time knobs of approximate indexes: IVF lists probed, HNSW search depth."""
    inner = _inner(index)
    if _is_ivf(inner):
        faiss.extract_index_ivf(inner).nprobe = nprobe
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = ef_search


def merge_shards(indexes: list[faiss.Index], *, in_memory: bool = False) -> faiss.Index:
    """One searchable index over per-shard indexes (same dimension and metric), the shards'
    own labels kept (they encode shard and row), hits merged by score.

    When every shard is IVF with the same coarse centroids (the build trains the quantizer once
    and every shard starts from it) the query is quantized once with shard 0's quantizer and
    each shard in turn scans its nprobe lists with ``search_preassigned``
    (``faiss.IndexShardsIVF``): the same answer as each shard searching itself, without a
    coarse search per shard. nprobe is read from the shards at search time and must then be
    the same on all of them (faiss raises otherwise). Any other mix is searched by each shard
    in full, one thread per shard (``faiss.IndexShards``). The merged index holds references
    to the given shard objects (and so to shard 0's quantizer). Raises ValueError on an empty
    list.

    ``in_memory``: IVF shards sharing a quantizer are copied into one in-memory IVF index
    instead (`ivf_in_memory`): as fast as one index, at the cost of holding every shard's lists
    in RAM. Other shards are merged as above.
    """
    if not indexes:
        raise ValueError("no shard indexes to merge")
    if _shared_quantizer(indexes):
        if in_memory:
            return ivf_in_memory(indexes)
        first = faiss.downcast_index(indexes[0])
        # Unthreaded: each shard only scans its part of nprobe lists, too little work to pay
        # for waking a thread per shard (1M items, 8 shards, 2 cores: p50 0.62 ms threaded,
        # 0.46 ms not, one index 0.34 ms). A batch of queries is still spread over cores by
        # faiss's OpenMP inside each shard's scan, as in one index.
        merged = faiss.IndexShardsIVF(first.quantizer, first.nlist, False, False)
    else:
        merged = faiss.IndexShards(indexes[0].d, True, False)
    for index in indexes:
        merged.add_shard(index)  # the Python wrapper keeps a reference to each shard
    return merged


def drop_id_maps(indexes: list[faiss.Index], numbers: list[int]) -> list[faiss.Index] | None:
    """The inner indexes of IDMap shards whose ids are exactly their rows' labels
    (`shard_labels`), with the id maps freed (8 bytes per item each, read into RAM even when
    the vectors are memory-mapped), for `RowLabels` to search; None (nothing changed) unless
    every shard is such. The IDMaps still own their inner indexes, so they must be kept
    alive (`RowLabels` keeps them), and must not be searched or given here again: their id
    maps are empty (this consumes them)."""
    if not all(isinstance(i, faiss.IndexIDMap) and not _is_ivf(i) for i in indexes):
        return None
    for index, number in zip(indexes, numbers, strict=True):
        if index.id_map.size() != index.ntotal:  # given to drop_id_maps before: consumed
            raise ValueError(f"shard {number}: its IDMap's ids were dropped already")
        if not np.array_equal(faiss.vector_to_array(index.id_map),
                              shard_labels(number, index.ntotal)):
            return None
    inner = []
    for index in indexes:
        index.id_map.swap(faiss.Int64Vector())  # freed with the temporary vector
        inner.append(faiss.downcast_index(index.index))
    return inner


class RowLabels:
    """Shards that store no ids (`drop_id_maps`) searched as one (``faiss.IndexShards``, each
    shard in parallel, hits merged by score), answering with the shards' labels
    (``shard << LABEL_SHIFT | row``), -1 where fewer than k items exist."""

    def __init__(self, indexes: list[faiss.Index], numbers: list[int],
                 owners: list[faiss.Index] = ()) -> None:
        if not indexes:
            raise ValueError("no shard indexes to merge")
        self.index = faiss.IndexShards(indexes[0].d, True, True)  # ids: positions in the lot
        for index in indexes:
            self.index.add_shard(index)
        self.shards, self.owners = list(indexes), list(owners)  # kept alive with it
        sizes = np.array([i.ntotal for i in indexes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.numbers = np.asarray(numbers, dtype=np.int64)
        self.d, self.ntotal = int(indexes[0].d), int(sizes.sum())

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, pos = self.index.search(x, k)
        # An empty shard starts where the next one does: the last start <= pos is the holder.
        which = np.searchsorted(self.starts, pos, side="right") - 1
        labels = (self.numbers[which] << LABEL_SHIFT) | (pos - self.starts[which])
        return dist, np.where(pos >= 0, labels, -1)


def ivf_in_memory(indexes: list[faiss.Index]) -> faiss.Index:
    """One in-memory IVF index holding every list of every shard (bare IVF indexes with the
    same coarse quantizer, as `_shared_quantizer` checks), labels kept; the shards (memory-mapped
    or not) are read, never changed.

    Each probed list is then one contiguous run, where sharded lists are one short run per
    shard: on 1M items in 8 shards, the short runs made a query about 1.3x slower than one
    index, with the same number of vectors scanned (`bench/search.py`).
    """
    merged = faiss.deserialize_index(faiss.serialize_index(indexes[0]))  # IndexIVF* subclass
    merged.reset()  # the trained empty index: quantizer and parameters of shard 0
    dst = merged.invlists
    for index in indexes:
        src = faiss.extract_index_ivf(index).invlists
        for lst in range(merged.nlist):
            size = src.list_size(lst)
            if size:
                ids, codes = src.get_ids(lst), src.get_codes(lst)
                dst.add_entries(lst, size, ids, codes)
                src.release_ids(lst, ids)
                src.release_codes(lst, codes)
    merged.ntotal = sum(index.ntotal for index in indexes)
    return merged


def _shared_quantizer(indexes: list[faiss.Index]) -> bool:
    """Whether every index is a bare IVF index (no IDMap or transform around it) whose flat
    coarse quantizer holds bit-identical centroids to shard 0's, with the same nlist, nprobe and
    metric, so shard 0's coarse assignment is every shard's own."""
    first = faiss.downcast_index(indexes[0])
    if not isinstance(first, faiss.IndexIVF):
        return False
    q0 = faiss.downcast_index(first.quantizer)
    centroids = _centroids(q0)  # [nlist, d]; a few MB: compared once, when the shards open
    if centroids is None or len(centroids) != first.nlist:
        return False
    for index in indexes[1:]:
        ivf = faiss.downcast_index(index)
        if not isinstance(ivf, faiss.IndexIVF):
            return False
        q = faiss.downcast_index(ivf.quantizer)
        if (type(q) is not type(q0) or ivf.nlist != first.nlist or ivf.nprobe != first.nprobe
                or ivf.metric_type != first.metric_type or q.metric_type != q0.metric_type):
            return False
        other = _centroids(q)
        if other is None or not np.array_equal(other, centroids):
            return False
    return True


def _centroids(quantizer: faiss.Index) -> np.ndarray | None:
    """The coarse centroids [nlist, d] float32 of a flat quantizer, else None: only an exact
    coarse search assigns lists from the centroids alone (an HNSW quantizer's answer also
    depends on its graph), so only flat quantizers are shared."""
    if not isinstance(quantizer, faiss.IndexFlat):
        return None
    return quantizer.reconstruct_n(0, quantizer.ntotal)


def read_index(path: str) -> faiss.Index:
    """Read a shard memory-mapped where faiss can: IO_FLAG_MMAP_IFC maps flat codes (plain
    IO_FLAG_MMAP would load them), IO_FLAG_MMAP maps IVF inverted lists; so shards need not
    fit in RAM. Raises IntegrityError naming the file when it is not a readable index."""
    errors = []
    for flag in (faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP, 0):
        try:
            return faiss.read_index(path, flag)
        except RuntimeError as e:
            errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
    raise IntegrityError(f"{path}: not a readable faiss index ({errors[-1]})")
