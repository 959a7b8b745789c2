"""The search methods' retriever over the build's score rows, for validation.

Every round of every test query's search is an ``Ask`` (``curindex.search.methods``): the n best
items, by a vector's inner product in one space, that the query has not scored yet. One Spark
job per round answers all of them: each task ranks its partition's items for every ask and
keeps its best n; the driver merges the tasks' lists. The vectors are computed from each score
row exactly as the version stores them (``e = G h`` as the write-shards stage computes it; the
anchor-query scores ``h`` and the bi-encoder embedding decoded through the extra indexes'
trained codecs), and the exact score of a candidate is its score row's column for the ask's
test query. So validation retrieves what the Searcher retrieves from the shards, without H or
the test queries' score rows ever reaching the driver: only each round's candidates do.

Items are keyed by a 64-bit hash of their id on the executors (the asks' exclusion sets travel
as arrays of those keys); the driver keeps the ids. For an approximate item-vector index (IVF,
HNSW, PQ) the "e" asks are answered by the built shards themselves, searched one at a time on
the driver as the Searcher's merged index would, and their exact scores looked up with a join.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curindex.kinds import Features, scorerows
from curindex.search.methods import Ask

FOUND_SCHEMA = "ask int, item_id string, key long, est float, exact float"
COLUMNS_SCHEMA = "item_id string, h array<float>"
EXACT = "exact"  # an ask in this space ranks by the exact score itself (the truth)


def item_key(item_id: str) -> int:
    """The 64-bit key of an item id (the same on every process)."""
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "little",
                          signed=True)


@dataclass(frozen=True)
class Codecs:
    """How a score row becomes the vectors the version's indexes hold."""

    features: Features  # the build kind's: a row's features h and its vector e
    first: int | None  # score column of test query 0 (None: the rows hold no test score)
    x: bytes | None  # the extra index's trained empty index (None: no extra index)
    layout: tuple[str, ...] = ()  # its segments, in order ("h": h_dim dims, "bi": the rest)


def decoder(blob: bytes | None) -> Callable[[np.ndarray], np.ndarray]:
    """Vectors as an index of that trained empty index stores them (encode, then decode)."""
    if blob is None:
        return lambda x: x
    index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))  # already downcast
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index

    def decode(x: np.ndarray, _owner: faiss.Index = index) -> np.ndarray:
        # _owner: the IDMap owns `inner`; it must outlive this function, or inner is freed
        return inner.sa_decode(inner.sa_encode(np.ascontiguousarray(x, np.float32)))

    return decode


def _features(batch: pa.RecordBatch, codecs: Codecs, s: np.ndarray) -> np.ndarray:
    return codecs.features.h(s, lambda: scorerows.matrix(batch.column("bi")))


def extra_vectors(batch: pa.RecordBatch, codecs: Codecs, decode: Callable,
                  h: np.ndarray | None = None) -> np.ndarray:
    """The extra index's vectors of a batch of score rows, as the index stores them (`h`: the
    rows' features when already computed)."""
    s = scorerows.matrix(batch.column("scores"))
    parts = {"h": lambda: h if h is not None else _features(batch, codecs, s),
             "bi": lambda: scorerows.matrix(batch.column("bi"))}
    return decode(np.hstack([parts[name]() for name in codecs.layout]))


def _spaces(batch: pa.RecordBatch, codecs: Codecs, decode: Callable, wanted: set[str]
            ) -> dict[str, np.ndarray]:
    s = scorerows.matrix(batch.column("scores"))  # [n, scored queries]
    # None: no test score in the rows (pooled validation scores the candidates apart)
    out = {EXACT: s[:, codecs.first:] if codecs.first is not None else None}
    h = _features(batch, codecs, s) if wanted & {"e", "h", "hb"} else None
    if "e" in wanted:
        out["e"] = codecs.features.e(h)  # as write_shards computes them
    if wanted & {"h", "bi", "hb"}:
        x = extra_vectors(batch, codecs, decode, h)
        at = 0
        for name in codecs.layout:
            width = codecs.features.h_dim if name == "h" else x.shape[1] - at
            out[name] = x[:, at:at + width]
            at += width
        out["hb"] = x  # the layout is h then bi when both are there
    return out


def best_per_ask(ask: np.ndarray, est: np.ndarray, ids: np.ndarray, n: np.ndarray
                 ) -> np.ndarray:
    """Indices of the rows to keep: for each ask number in `ask`, its `n[ask]` best rows by
    estimate, equal estimates by item id (rows of all asks together, vectorised), in the
    order (ask, best first)."""
    if len(ask) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-est.astype(np.float64), ask))
    a, e = ask[order], est[order]
    # equal (ask, estimate) runs, rare, are put in id order
    tied = np.flatnonzero((a[1:] == a[:-1]) & (e[1:] == e[:-1]))
    if len(tied):
        starts = tied[np.r_[True, np.diff(tied) > 1]]
        for start in starts:
            stop = start + 1
            while stop < len(a) and a[stop] == a[start] and e[stop] == e[start]:
                stop += 1
            run = order[start:stop]
            order[start:stop] = run[np.argsort(ids[run], kind="stable")]
    first = np.searchsorted(a, a, side="left")  # where each row's ask starts
    return order[np.arange(len(order)) - first < n[a]]


def _excluded(keys: np.ndarray, seen_ask: np.ndarray, seen_key: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, asks) of the batch's items that an ask has already scored."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pos = np.clip(np.searchsorted(sorted_keys, seen_key), 0, max(len(keys) - 1, 0))
    hit = sorted_keys[pos] == seen_key if len(keys) else np.zeros(len(seen_key), bool)
    return order[pos[hit]], seen_ask[hit]


def found_fn(codecs: Codecs, payload) -> Callable[[Iterator[pa.RecordBatch]],
                                                  Iterator[pa.RecordBatch]]:
    """mapInArrow function: per task, every ask's n best items of its partition.
    `payload`: a broadcast of {"space": [..], "n": [..], "test": [..], "seen_ask",
    "seen_key" (every ask's excluded item keys, flat), "vectors": {space: [m, d] float32},
    "rows": {space: [ask numbers]}}."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        p = payload.value
        decode = decoder(codecs.x)
        n = np.asarray(p["n"], dtype=np.int64)
        parts: list[tuple] = []  # (ask, ids, keys, est, exact) candidates of each batch
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = np.array(batch.column("item_id").to_pylist(), dtype=object)
            keys = np.array([item_key(i) for i in ids], dtype=np.int64)
            x = _spaces(batch, codecs, decode, set(p["space"]))
            for space, asks in p["rows"].items():
                est = (x[EXACT][:, p["test"][asks]] if space == EXACT
                       else x[space].astype(np.float32) @ p["vectors"][space].T)
                est = est.astype(np.float32)  # [rows, asks of this space]
                col = np.full(len(n), -1, dtype=np.int64)
                col[asks] = np.arange(len(asks))
                in_space = col[p["seen_ask"]] >= 0
                rows, seen = _excluded(keys, p["seen_ask"][in_space], p["seen_key"][in_space])
                est[rows, col[seen]] = -np.inf
                # each ask's best rows of this batch: a column-wise sort by (-est, id)
                by_id = np.argsort(ids, kind="stable")
                top = by_id[np.argsort(-est[by_id], axis=0, kind="stable")[: n[asks].max()]]
                r, c = np.nonzero(np.arange(top.shape[0])[:, None] < n[asks][None, :])
                rr = top[r, c]
                ok = np.isfinite(est[rr, c])
                rr, c = rr[ok], c[ok]
                exact = (x[EXACT][rr, p["test"][asks[c]]] if x[EXACT] is not None
                         else np.full(len(rr), np.nan))
                parts.append((asks[c], ids[rr], keys[rr], est[rr, c],
                              exact.astype(np.float32)))
        if parts:
            ask, ids, keys, est, exact = (np.concatenate(v) for v in zip(*parts, strict=True))
            keep = best_per_ask(ask, est, ids, n)
            ask, ids, keys, est, exact = ask[keep], ids[keep], keys[keep], est[keep], exact[keep]
        else:
            ask, ids, keys, est, exact = (np.zeros(0, t) for t in
                                          (np.int32, object, np.int64, np.float32, np.float32))
        yield pa.RecordBatch.from_arrays(
            [pa.array(ask, pa.int32()), pa.array(ids.tolist(), pa.string()),
             pa.array(keys, pa.int64()), pa.array(est, pa.float32()),
             pa.array(exact, pa.float32())],
            names=["ask", "item_id", "key", "est", "exact"])

    return run


class SparkRetriever:
    """The methods' `Retriever` over the score rows; see the module docstring. Keys are item
    ids; `query` of an ask is the test query's number (score column `first + query`)."""

    def __init__(self, spark: SparkSession, rows: DataFrame, codecs: Codecs, *,
                 approx_e: Callable[[Sequence[Ask]], list] | None = None) -> None:
        self.spark, self.rows, self.codecs = spark, rows, codecs
        self.approx_e = approx_e
        self.keys: dict[str, int] = {}

    def retrieve(self, asks: Sequence[Ask]) -> list[tuple[list[str], np.ndarray]]:
        out: list = [None] * len(asks)
        spark_asks = [i for i, a in enumerate(asks) if not (a.space == "e" and self.approx_e)]
        if len(spark_asks) < len(asks):
            idx = [i for i in range(len(asks)) if i not in set(spark_asks)]
            for i, found in zip(idx, self.approx_e([asks[i] for i in idx]), strict=True):
                out[i] = found
        if spark_asks:
            for i, found in zip(spark_asks, self._spark([asks[i] for i in spark_asks]),
                                strict=True):
                out[i] = found
        return out

    def _spark(self, asks: Sequence[Ask]) -> list[tuple[list[str], np.ndarray]]:
        rows: dict[str, list[int]] = {}
        for i, a in enumerate(asks):
            rows.setdefault(a.space, []).append(i)
        seen = [np.array(sorted(self._key(k) for k in a.seen), dtype=np.int64) for a in asks]
        payload = {
            "space": [a.space for a in asks], "n": [a.n for a in asks],
            "test": np.array([a.query for a in asks], dtype=np.int64),
            "seen_ask": np.repeat(np.arange(len(asks)), [len(x) for x in seen]),
            "seen_key": np.concatenate(seen) if seen else np.zeros(0, np.int64),
            "rows": {s: np.array(r) for s, r in rows.items()},
            "vectors": {s: np.stack([asks[i].vector for i in r]).astype(np.float32)
                        for s, r in rows.items() if s != EXACT},
        }
        b = self.spark.sparkContext.broadcast(payload)
        try:
            table = (self.rows.mapInArrow(found_fn(self.codecs, b), FOUND_SCHEMA)
                     .toArrow())
        finally:
            b.destroy()
        ask = table.column("ask").to_numpy()
        ids = np.array(table.column("item_id").to_pylist(), dtype=object)
        est = table.column("est").to_numpy()
        exact = table.column("exact").to_numpy()
        self.keys.update(zip(ids.tolist(), table.column("key").to_pylist(), strict=True))
        keep = best_per_ask(ask, est, ids, np.array([a.n for a in asks], dtype=np.int64))
        out: list[tuple[list[str], np.ndarray]] = [([], np.zeros(0)) for _ in asks]
        groups = np.split(keep, np.flatnonzero(np.diff(ask[keep])) + 1) if len(keep) else []
        for g in groups:
            out[int(ask[g[0]])] = (ids[g].tolist(), exact[g].astype(np.float64))
        return out

    def _key(self, item_id: str) -> int:
        key = self.keys.get(item_id)
        if key is None:
            key = self.keys[item_id] = item_key(item_id)
        return key

    def columns(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The extra vectors of the items `keys` as the index stores them (anchor-query scores,
        then bi-encoder embeddings when both are there), from their score rows (one pass,
        each task keeping the rows whose key is asked for)."""
        codecs = self.codecs
        wanted = self.spark.sparkContext.broadcast(
            np.array(sorted(self._key(k) for k in keys), dtype=np.int64))

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            decode = decoder(codecs.x)
            for batch in batches:
                if not batch.num_rows:
                    continue
                ids = batch.column("item_id").to_pylist()
                rows = np.flatnonzero(np.isin(np.array([item_key(i) for i in ids],
                                                       dtype=np.int64), wanted.value))
                if len(rows):
                    x = extra_vectors(batch.take(pa.array(rows)), codecs, decode)
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([ids[r] for r in rows], pa.string()),
                         scorerows.list_array(x)], names=["item_id", "h"])

        try:
            table = self.rows.mapInArrow(run, COLUMNS_SCHEMA).toArrow()
        finally:
            wanted.destroy()
        h = scorerows.matrix(table.column("h")).astype(np.float64)
        asked = set(keys)  # (another item whose key collides is not one of them)
        return {i: row for i, row in zip(table.column("item_id").to_pylist(), h, strict=True)
                if i in asked}


class WithTruth:
    """A retriever that answers `truth` (asks of the exact top items) along with the first
    round, in the same job; `truth_found` holds their answers after it."""

    def __init__(self, inner: SparkRetriever, truth: Sequence[Ask]) -> None:
        self.inner, self.truth = inner, list(truth)
        self.truth_found: list[tuple[list[str], np.ndarray]] | None = None

    def retrieve(self, asks: Sequence[Ask]) -> list[tuple[list[str], np.ndarray]]:
        if self.truth_found is not None:
            return self.inner.retrieve(asks)
        found = self.inner.retrieve([*asks, *self.truth])
        self.truth_found = found[len(asks):]
        return found[: len(asks)]

    def columns(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return self.inner.columns(keys)


def shard_retriever(spark: SparkSession, rows: DataFrame, *, shards: Sequence[dict],
                    read_shard: Callable[[str], bytes], first: int, nprobe: int,
                    ef_search: int) -> Callable[[Sequence[Ask]], list]:
    """"e" asks answered by the built (approximate) shards: each shard searched on the driver
    in turn (one in memory at a time), hits merged by (-estimate, id) as the Searcher's merged
    index gives them, exact scores looked up in the score rows with a join."""
    from curindex.search.reader import read_id_map
    from curindex.search.shardindex import read_index, set_search_params, split_labels

    def answer(asks: Sequence[Ask]) -> list[tuple[list[str], np.ndarray]]:
        x = np.stack([a.vector for a in asks]).astype(np.float32)
        found: list[list[tuple[float, str]]] = [[] for _ in asks]
        with tempfile.TemporaryDirectory(prefix="curindex-validate-") as tmp:
            for s in shards:
                path = os.path.join(tmp, "shard.faiss")
                with open(path, "wb") as f:
                    f.write(read_shard(s["index"]))
                index = read_index(path)
                set_search_params(index, nprobe=nprobe, ef_search=ef_search)
                want = min(max(a.n + len(a.seen) for a in asks), index.ntotal)
                d, lab = index.search(np.ascontiguousarray(x), want)
                ids_path = os.path.join(tmp, os.path.basename(s["ids"]))
                with open(ids_path, "wb") as f:
                    f.write(read_shard(s["ids"]))
                item_ids = read_id_map(ids_path).column("item_id")
                _, rows_ = split_labels(lab)
                for i, a in enumerate(asks):
                    for j in range(lab.shape[1]):
                        if lab[i, j] >= 0:
                            iid = item_ids[int(rows_[i, j])].as_py()
                            if iid not in a.seen:
                                found[i].append((-float(d[i, j]), iid))
                del item_ids
        cand = [[iid for _, iid in sorted(f)[: a.n]] for f, a in zip(found, asks, strict=True)]
        pairs = spark.createDataFrame(
            [(i, iid, asks[i].query) for i, c in enumerate(cand) for iid in c],
            "ask int, item_id string, t int")
        looked = (pairs.join(rows.select("item_id", "scores"), "item_id")
                  .select("ask", "item_id", F.element_at("scores", F.col("t") + first + 1)
                          .cast("double").alias("exact")).toArrow().to_pydict())
        exact = {(a, i): e for a, i, e in zip(looked["ask"], looked["item_id"],
                                              looked["exact"], strict=True)}
        return [(c, np.array([exact[(i, iid)] for iid in c], dtype=np.float64))
                for i, c in enumerate(cand)]

    return answer
