"""faiss shard layout shared by the build and the Searcher (no Spark here).

A shard is one faiss inner-product index plus a Parquet id map. A faiss label is
``shard << LABEL_SHIFT | row``: row ``row`` of that shard's id map (label, item_id, text).
"""

from __future__ import annotations

import faiss
import numpy as np

from curindex.errors import ConfigError, StoreError

LABEL_SHIFT = 40  # up to 2^40 items per shard, 2^23 shards
# Extra exact indexes a shard can carry beside its item vectors, same labels: "h" the items'
# anchor-query scores (adaptive search re-solves queries on them), "bi" their bi-encoder
# embeddings (the first round of bi-encoder-seeded search).
EXTRAS = ("h", "bi")


def shard_files(shard: int) -> tuple[str, str]:
    """Paths, relative to the version folder, of a shard's index and id map."""
    return f"shards/shard-{shard:05d}.faiss", f"shards/ids-{shard:05d}.parquet"


def extra_shard_file(name: str, shard: int) -> str:
    """Path of one of a shard's extra indexes: "h" (anchor-query scores per item, for adaptive
    search) or "bi" (bi-encoder embeddings, for bi-encoder-seeded search)."""
    return f"shards/{name}-{shard:05d}.faiss"


def shard_labels(shard: int, n: int) -> np.ndarray:
    """Labels of rows 0..n-1 of `shard`."""
    return (np.int64(shard) << LABEL_SHIFT) | np.arange(n, dtype=np.int64)


def split_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard, row) of each faiss label."""
    labels = np.asarray(labels, dtype=np.int64)
    return labels >> LABEL_SHIFT, labels & ((1 << LABEL_SHIFT) - 1)


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


def read_index(path: str) -> faiss.Index:
    """Read a shard memory-mapped where faiss can: IO_FLAG_MMAP_IFC maps flat codes (plain
    IO_FLAG_MMAP would load them), IO_FLAG_MMAP maps IVF inverted lists; so shards need not
    fit in RAM. Raises StoreError naming the file when it is not a readable index."""
    errors = []
    for flag in (faiss.IO_FLAG_MMAP_IFC, faiss.IO_FLAG_MMAP, 0):
        try:
            return faiss.read_index(path, flag)
        except RuntimeError as e:
            errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
    raise StoreError(f"{path}: not a readable faiss index ({errors[-1]})")
