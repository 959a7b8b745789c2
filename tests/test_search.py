"""Searching shards as one index (``curindex.search.shardindex.merge_shards``, used by the Searcher)
against one faiss index holding every vector, against each shard searched on its own, and
against numpy brute force. Generated vectors; no Spark."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from curindex.search.methods import Ask
from curindex.search.reader import Shard, VersionShards
from curindex.search.shardindex import (
    LABEL_SHIFT,
    empty_index,
    merge_shards,
    read_index,
    set_search_params,
    shard_labels,
    split_labels,
)
from curindex.search.version import OpenVersion, _Retriever

N, DIM, SHARDS, NLIST, NPROBE, K = 20_000, 32, 4, 64, 4, 50
FACTORY = f"IVF{NLIST},Flat"


@pytest.fixture(scope="module")
def data() -> dict:
    """Items [N, DIM] split over SHARDS unevenly (labels as the build makes them), and queries
    [100, DIM]."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, DIM)).astype(np.float32)
    q = rng.normal(size=(100, DIM)).astype(np.float32)
    shard_of = rng.integers(SHARDS, size=N)
    labels = np.empty(N, dtype=np.int64)
    for s in range(SHARDS):
        rows = np.flatnonzero(shard_of == s)
        labels[rows] = shard_labels(s, len(rows))
    return {"x": x, "q": q, "shard_of": shard_of, "labels": labels}


def trained(x: np.ndarray) -> np.ndarray:
    """An empty IVF index trained on `x`, serialized (as the build broadcasts it): uint8."""
    index = empty_index(FACTORY, DIM)
    index.train(x)
    return faiss.serialize_index(index)


def shard_indexes(data: dict, blobs: list[np.ndarray], tmp: Path) -> list[faiss.Index]:
    """Shard s filled from blobs[s], written and read back memory-mapped as the Searcher reads
    it, with nprobe = NPROBE."""
    out = []
    for s, blob in enumerate(blobs):
        rows = np.flatnonzero(data["shard_of"] == s)
        index = faiss.deserialize_index(blob)
        index.add_with_ids(data["x"][rows], data["labels"][rows])
        faiss.write_index(index, str(tmp / f"shard-{s}.faiss"))
        out.append(read_index(str(tmp / f"shard-{s}.faiss")))
        set_search_params(out[-1], nprobe=NPROBE, ef_search=16)
    return out


def ranked(d: np.ndarray, lab: np.ndarray) -> list[list[tuple[float, int]]]:
    """Per query the (score, label) hits, best first, equal scores by label (ties aside)."""
    out = []
    for drow, lrow in zip(d, lab, strict=True):
        keep = lrow >= 0
        order = np.lexsort((lrow[keep], -drow[keep]))
        out.append(list(zip(drow[keep][order].tolist(), lrow[keep][order].tolist(), strict=True)))
    return out


def exact(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every query's inner products [n_q, N] (numpy, float64) and its exact top K rows."""
    scores = data["q"].astype(np.float64) @ data["x"].T.astype(np.float64)
    return scores, np.argsort(-scores, axis=1, kind="stable")[:, :K]


def assert_brute_force(d: np.ndarray, lab: np.ndarray, data: dict) -> None:
    """The hits are the exact top K by inner product with their scores."""
    scores, top = exact(data)
    for qi in range(len(data["q"])):
        assert set(lab[qi].tolist()) == set(data["labels"][top[qi]].tolist())
        np.testing.assert_allclose(d[qi], scores[qi, top[qi]], rtol=1e-5, atol=1e-4)


def test_ivf_shards_sharing_a_quantizer_equal_one_index(data, tmp_path):
    """Shards from one trained quantizer are coarse-searched once (IndexShardsIVF) and return
    exactly what one IVF index with that quantizer and every vector returns, labels kept."""
    blob = trained(data["x"][:10_000])
    shards = shard_indexes(data, [blob] * SHARDS, tmp_path)
    single = faiss.deserialize_index(blob)
    single.add_with_ids(data["x"], data["labels"])
    single.nprobe = NPROBE
    merged = merge_shards(shards)
    assert isinstance(merged, faiss.IndexShardsIVF)
    assert merged.ntotal == N

    got = merged.search(data["q"], K)
    want = single.search(data["q"], K)
    assert ranked(*got) == ranked(*want)
    assert set(split_labels(got[1])[0].ravel().tolist()) == set(range(SHARDS))
    _, top = exact(data)  # nprobe 4 of 64 lists misses some of the exact top K
    assert any(set(got[1][qi].tolist()) != set(data["labels"][top[qi]].tolist())
               for qi in range(len(data["q"])))

    for index in shards:  # nprobe is read from the shards at search time
        set_search_params(index, nprobe=NLIST, ef_search=16)
    assert_brute_force(*merged.search(data["q"], K), data)


def test_ivf_shards_in_memory_equal_one_index(data, tmp_path):
    """`in_memory` copies memory-mapped IVF shards into one IVF index: the same answers as one
    index holding every vector, shards untouched; shards with other quantizers fall back."""
    blob = trained(data["x"][:10_000])
    shards = shard_indexes(data, [blob] * SHARDS, tmp_path)
    single = faiss.deserialize_index(blob)
    single.add_with_ids(data["x"], data["labels"])
    single.nprobe = NPROBE
    merged = merge_shards(shards, in_memory=True)
    assert isinstance(merged, faiss.IndexIVFFlat) and merged.nprobe == NPROBE
    assert merged.ntotal == N
    assert ranked(*merged.search(data["q"], K)) == ranked(*single.search(data["q"], K))
    assert sum(index.ntotal for index in shards) == N  # read, not moved
    assert ranked(*merge_shards(shards).search(data["q"], K)) == ranked(
        *merged.search(data["q"], K))
    merged.nprobe = NLIST
    assert_brute_force(*merged.search(data["q"], K), data)

    (tmp_path / "other").mkdir()
    other = shard_indexes(data, [trained(data["x"][10_000:])] + [blob] * (SHARDS - 1),
                          tmp_path / "other")
    assert isinstance(merge_shards(other, in_memory=True), faiss.IndexShards)


@pytest.mark.parametrize("differ", ["retrained", "one centroid one ulp off"])
def test_ivf_shards_with_other_centroids_fall_back(data, tmp_path, differ):
    """Shards whose quantizers differ at all are each searched with their own: the answer is
    every shard's own search merged by score."""
    blob = trained(data["x"][:10_000])
    if differ == "retrained":
        blobs = [trained(data["x"][s * 5_000:(s + 1) * 5_000]) for s in range(SHARDS)]
    else:
        other = faiss.deserialize_index(blob)
        quantizer = faiss.downcast_index(other.quantizer)
        centroids = quantizer.reconstruct_n(0, NLIST)  # [NLIST, DIM]
        centroids[3, 5] = np.nextafter(centroids[3, 5], np.float32(np.inf))
        quantizer.reset()
        quantizer.add(centroids)
        blobs = [blob] * (SHARDS - 1) + [faiss.serialize_index(other)]
    shards = shard_indexes(data, blobs, tmp_path)
    merged = merge_shards(shards)
    assert not isinstance(merged, faiss.IndexShardsIVF)

    parts = [index.search(data["q"], K) for index in shards]
    d = np.concatenate([p[0] for p in parts], axis=1)  # [n_q, SHARDS * K]
    lab = np.concatenate([p[1] for p in parts], axis=1)
    want = [row[:K] for row in ranked(d, lab)]
    assert ranked(*merged.search(data["q"], K)) == want

    for index in shards:
        set_search_params(index, nprobe=NLIST, ef_search=16)
    assert_brute_force(*merged.search(data["q"], K), data)


def test_flat_shards_equal_brute_force(data):
    shards = []
    for s in range(SHARDS):
        rows = np.flatnonzero(data["shard_of"] == s)
        index = empty_index("IDMap,Flat", DIM)
        index.add_with_ids(data["x"][rows], data["labels"][rows])
        shards.append(index)
    merged = merge_shards(shards)
    assert not isinstance(merged, faiss.IndexShardsIVF)
    assert_brute_force(*merged.search(data["q"], K), data)


def flat_version(data: dict, tmp: Path, labels: np.ndarray, *, empty: int | None = None,
                 ) -> VersionShards:
    """A version's flat shards (IDMap,Flat as the build writes them, `labels` as their ids,
    shard `empty` holding nothing), written and read back as the Searcher reads them."""
    shards = []
    for s in range(SHARDS + 1 if empty is not None else SHARDS):
        rows = (np.zeros(0, dtype=np.int64) if s == empty else
                np.flatnonzero(data["shard_of"] == (s if empty is None or s < empty else s - 1)))
        index = empty_index("Flat", DIM)
        if len(rows):
            index.add_with_ids(data["x"][rows], labels[rows])
        faiss.write_index(index, str(tmp / f"flat-{s}.faiss"))
        shards.append(Shard(s, read_index(str(tmp / f"flat-{s}.faiss")),
                            pa.chunked_array([[f"id{r}" for r in rows]], type=pa.string()),
                            pa.chunked_array([[""] * len(rows)], type=pa.string()), {}))
    return VersionShards(shards)


def test_flat_shards_are_searched_without_their_id_maps(data, tmp_path):
    """Shards whose ids are their rows' labels are searched without the IDMap (no id array
    in RAM), with the same labels as brute force, an empty shard among them; shards with any
    other ids keep their IDMap."""
    # Shard 2 empty: every later shard's number is one more than in `data`.
    relabelled = data["labels"].copy()
    shard, row = split_labels(relabelled)
    moved = shard >= 2
    relabelled[moved] = ((shard[moved] + 1) << LABEL_SHIFT) | row[moved]
    version = flat_version(data, tmp_path, relabelled, empty=2)
    index = version.indexes["e"]
    assert not isinstance(index, faiss.Index)  # RowLabels: no IDMap left
    assert all(not isinstance(s.index, faiss.IndexIDMap) for s in version.shards.values())
    scores, top = exact(data)
    d, lab = index.search(data["q"], K)
    for qi in range(len(data["q"])):
        assert set(lab[qi].tolist()) == set(relabelled[top[qi]].tolist())
        np.testing.assert_allclose(d[qi], scores[qi, top[qi]], rtol=1e-5, atol=1e-4)
    d, lab = index.search(data["q"][:2], N + 5)  # more than there are: -1 past the end
    assert (lab[:, N:] == -1).all() and set(lab[0, :N].tolist()) == set(relabelled.tolist())

    other = flat_version(data, tmp_path, data["labels"] + 1)  # ids that are not row labels
    assert isinstance(other.indexes["e"], faiss.IndexShards)
    assert_brute_force(*other.indexes["e"].search(data["q"], K),
                       {**data, "labels": data["labels"] + 1})


def test_no_shards_is_an_error():
    with pytest.raises(ValueError, match="no shard"):
        merge_shards([])


@pytest.mark.parametrize("ivf_in_memory", [False, True])
def test_searcher_retrieves_over_ivf_shards_with_one_coarse_search(data, tmp_path,
                                                                    ivf_in_memory):
    """The Searcher's retrieval over IVF shards from one quantizer: one coarse search (or, with
    `ivf_in_memory`, one in-memory IVF index), the same labels as one index holding every
    vector."""
    blob = trained(data["x"][:10_000])
    shards = shard_indexes(data, [blob] * SHARDS, tmp_path)
    rows = [np.flatnonzero(data["shard_of"] == s) for s in range(SHARDS)]
    shards = VersionShards(
        [Shard(s, index, pa.chunked_array([[f"id{r}" for r in rows[s]]]),
               pa.chunked_array([[""] * len(rows[s])]), {})
         for s, index in enumerate(shards)], ivf_in_memory=ivf_in_memory)
    kind = faiss.IndexIVFFlat if ivf_in_memory else faiss.IndexShardsIVF
    assert isinstance(shards.indexes["e"], kind)
    single = faiss.deserialize_index(blob)
    single.add_with_ids(data["x"], data["labels"])
    single.nprobe = NPROBE
    searcher = OpenVersion(store=None, version="test", manifest=None, scorer=Zeros(),
                           anchor_ids=[], anchor_texts=[], shards=shards)
    retriever = _Retriever(searcher, ["q"] * len(data["q"]))
    got = [keys for keys, _ in retriever.retrieve(
        [Ask(i, "e", q, K, frozenset()) for i, q in enumerate(data["q"])])]
    want = ranked(*single.search(data["q"], K))
    assert [sorted(g) for g in got] == [sorted(lab for _, lab in w) for w in want]


class Zeros:
    def score_block(self, queries, items):
        return np.zeros((len(queries), len(items)), dtype=np.float32)
