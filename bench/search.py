"""Latency of the sharded shard search against one faiss index holding every vector.

Synthetic item vectors (float32, k_i = 128) are split over shards the way the build does
(label = shard << 40 | row), written with faiss and read back memory-mapped as the Searcher
reads them, and combined with ``curindex.search.shardindex.merge_shards``, as the Searcher combines
them (IVF shards sharing one trained quantizer: ``faiss.IndexShardsIVF``, one coarse search per
query, the shards' lists scanned in turn; Flat: threaded ``faiss.IndexShards``). The single
index holds all vectors (IVF: the same trained quantizer as the shards). Queries are searched
one at a time (``--batch`` for more per call); sharded and single alternate per call so
machine noise hits both alike.

    .venv/bin/python bench/search.py                    # 1M items, 8 shards, Flat and IVF
    .venv/bin/python bench/search.py --items 20000      # seconds
    .venv/bin/python bench/search.py --variants         # also other ways to search the shards
    OMP_NUM_THREADS=1 .venv/bin/python bench/search.py  # faiss's OpenMP threads

faiss.omp_set_num_threads only changes the calling thread (libgomp keeps the setting per
thread); IndexShards searches on its own threads, which keep OMP_NUM_THREADS, so set that.

Prints one JSON object: per index type the merged index's faiss class (``sharded_merge``), the
p50/p99/mean latency (ms), queries/s, sharded/single p50 ratio, and recall_vs_exact (mean
overlap of the top-k with brute-force top-k).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from curindex.search.shardindex import empty_index, merge_shards, read_index, shard_labels

K_I = 128
RANK = 24  # latent dimension of the synthetic vectors
CLUSTERS = 512  # latent clusters, so IVF lists are uneven as with real embeddings
TRAIN_SAMPLE = 100_000  # as curindex.pipeline.shards (no Spark here): IVF trained once on a sample
CHUNK = 100_000

SearchFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Data:
    """Low-rank clustered vectors plus noise; the same distribution for items and queries."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.centers = rng.normal(size=(CLUSTERS, RANK))
        scale = np.linspace(1.0, 0.2, RANK)[:, None]  # a decaying spectrum
        self.mix = scale * rng.normal(size=(RANK, K_I)) / math.sqrt(RANK)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, K_I), dtype=np.float32)
        for lo in range(0, n, CHUNK):
            m = min(CHUNK, n - lo)
            z = self.centers[rng.integers(CLUSTERS, size=m)] + 0.7 * rng.normal(size=(m, RANK))
            out[lo:lo + m] = z @ self.mix + 0.05 * rng.normal(size=(m, K_I))
        return out


def write_read(index: faiss.Index, path: Path) -> faiss.Index:
    faiss.write_index(index, str(path))
    return read_index(str(path))


def build(x: np.ndarray, shard_of: np.ndarray, labels: np.ndarray, factory: str,
          n_shards: int, tmp: Path) -> tuple[list[faiss.Index], faiss.Index]:
    """Memory-mapped shard indexes and the single index, all from one trained empty index."""
    trained = empty_index(factory, K_I)
    if not trained.is_trained:
        sample = np.random.default_rng(1).choice(len(x), min(len(x), TRAIN_SAMPLE), replace=False)
        trained.train(x[np.sort(sample)])
    blob = faiss.serialize_index(trained)
    name = factory.replace(",", "_")
    shards = []
    for s in range(n_shards):
        rows = np.flatnonzero(shard_of == s)
        index = faiss.deserialize_index(blob)
        index.add_with_ids(x[rows], labels[rows])
        shards.append(write_read(index, tmp / f"{name}-{s}.faiss"))
        del index
    single = faiss.deserialize_index(blob)
    single.add_with_ids(x, labels)
    return shards, write_read(single, tmp / f"{name}-single.faiss")


def exact_top(x: np.ndarray, labels: np.ndarray, q: np.ndarray, k: int) -> list[set[int]]:
    out = []
    for lo in range(0, len(q), 16):  # [n_items, 16] scores at a time
        s = x @ q[lo:lo + 16].T
        top = np.argpartition(-s, k - 1, axis=0)[:k]
        out += [set(labels[top[:, j]].tolist()) for j in range(top.shape[1])]
    return out


def overlap(fn: SearchFn, q: np.ndarray, exact: list[set[int]], k: int) -> float:
    _, got = fn(q)
    return float(np.mean([len(exact[i] & set(got[i].tolist())) / k for i in range(len(q))]))


def time_queries(fns: dict[str, SearchFn], q: np.ndarray, warmup: int, batch: int
                 ) -> dict[str, np.ndarray]:
    """Seconds per call of each search on `batch` queries; the order rotates per call so noise
    hits all alike."""
    names = list(fns)
    for i in range(min(warmup, len(q))):  # fault in the memory-mapped codes
        for name in names:
            fns[name](q[i:i + 1])
    starts = range(0, len(q) - batch + 1, batch)
    t = {name: np.empty(len(starts)) for name in names}
    for j, lo in enumerate(starts):
        r = j % len(names)
        for name in names[r:] + names[:r]:
            t0 = time.perf_counter()
            fns[name](q[lo:lo + batch])
            t[name][j] = time.perf_counter() - t0
    return t


def stats(sec: np.ndarray, batch: int) -> dict[str, float]:
    ms = sec * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4), "qps": round(float(batch / sec.mean()), 1)}


def python_loop(shards: list[faiss.Index], k: int) -> SearchFn:
    """Each shard in turn from Python, then one merge in numpy (no faiss threads)."""
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res = [s.search(x, k) for s in shards]
        d = np.concatenate([r[0] for r in res], axis=1)
        lab = np.concatenate([r[1] for r in res], axis=1)
        top = np.argsort(-d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, top, 1), np.take_along_axis(lab, top, 1)
    return run


def hstack_ivf(shards: list[faiss.Index], k: int) -> SearchFn:
    """One IVF index over every shard's inverted lists: one coarse search, as a single index."""
    ivfs = [faiss.extract_index_ivf(s) for s in shards]
    lists = faiss.InvertedListsPtrVector()
    for ivf in ivfs:
        lists.push_back(ivf.invlists)
    stacked = faiss.HStackInvertedLists(lists.size(), lists.data())
    index = faiss.IndexIVFFlat(ivfs[0].quantizer, K_I, ivfs[0].nlist, faiss.METRIC_INNER_PRODUCT)
    index.replace_invlists(stacked, False)
    index.ntotal = sum(ivf.ntotal for ivf in ivfs)
    index.nprobe = ivfs[0].nprobe

    # faiss holds raw pointers: the default argument keeps the Python objects alive.
    def run(x: np.ndarray, _refs: tuple = (shards, lists, stacked)) -> tuple[np.ndarray, ...]:
        return index.search(x, k)
    return run


def variants(kind: str, shards: list[faiss.Index], k: int) -> dict[str, SearchFn]:
    """Other ways to search the same shards."""
    serial = faiss.IndexShards(K_I, False, False)
    for index in shards:
        serial.add_shard(index)
    out = {"unthreaded_shards": lambda v: serial.search(v, k),
           "python_loop": python_loop(shards, k)}
    if kind == "ivf":
        own = faiss.IndexShards(K_I, True, False)
        for index in shards:
            own.add_shard(index)
        # Each shard runs its own coarse search (the Searcher's merge before IndexShardsIVF).
        out["threaded_shards_own_quantizer"] = lambda v: own.search(v, k)
        out["ivf_hstack_invlists"] = hstack_ivf(shards, k)
    return out


def bench_type(kind: str, x: np.ndarray, shard_of: np.ndarray, labels: np.ndarray,
               q: np.ndarray, exact: list[set[int]], args: argparse.Namespace, tmp: Path) -> dict:
    n, k = len(x), args.topk
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    factory = "IDMap,Flat" if kind == "flat" else f"IVF{nlist},Flat"
    t0 = time.perf_counter()
    shards, single = build(x, shard_of, labels, factory, args.shards, tmp)
    build_s = time.perf_counter() - t0
    if kind == "ivf":
        for index in [*shards, single]:
            faiss.extract_index_ivf(index).nprobe = args.nprobe
    sharded = merge_shards(shards)  # what the Searcher searches
    fns: dict[str, SearchFn] = {"sharded": lambda v: sharded.search(v, k),
                                "single": lambda v: single.search(v, k)}
    sides = ["sharded", "single"]
    if kind == "ivf":  # the Searcher's ivf_in_memory: the shards copied into one IVF index
        t0 = time.perf_counter()
        in_memory = merge_shards(shards, in_memory=True)
        copy_s = time.perf_counter() - t0
        fns["sharded_in_memory"] = lambda v: in_memory.search(v, k)
        sides.append("sharded_in_memory")
    if args.variants:
        fns.update(variants(kind, shards, k))
    t = time_queries(fns, q, args.warmup, args.batch)
    rq = q[:args.recall_queries]
    out: dict = {"factory": factory, "build_s": round(build_s, 1),
                 "sharded_merge": type(sharded).__name__}
    if kind == "ivf":
        out.update(nlist=nlist, nprobe=args.nprobe)
    for side in sides:
        out.update({f"{side}_{key}": v for key, v in stats(t[side], args.batch).items()})
    out["ratio_p50"] = round(out["sharded_p50_ms"] / out["single_p50_ms"], 3)
    if kind == "ivf":
        out["sharded_in_memory_copy_s"] = round(copy_s, 2)
        out["ratio_in_memory_p50"] = round(out["sharded_in_memory_p50_ms"]
                                           / out["single_p50_ms"], 3)
    out["recall_vs_exact"] = {side: round(overlap(fns[side], rq, exact, k), 4)
                              for side in sides}
    if args.variants:
        out["variants"] = {
            name: {**stats(t[name], args.batch),
                   "recall_vs_exact": round(overlap(fn, rq, exact, k), 4)}
            for name, fn in fns.items() if name not in sides
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--batch", type=int, default=1, help="queries per search call (latency: 1)")
    p.add_argument("--types", default="flat,ivf", help="comma-separated: flat, ivf")
    p.add_argument("--variants", action="store_true",
                   help="also time unthreaded IndexShards, a per-shard Python loop and (IVF) "
                        "threaded IndexShards with a coarse search per shard and one IVF "
                        "index over every shard's inverted lists")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--recall-queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data, rng = Data(args.seed), np.random.default_rng(args.seed + 1)
    x = data.sample(args.items, rng)
    q = data.sample(args.queries, rng)
    # Shards of unequal size, as a hash of the item id gives; rows keep item order per shard.
    shard_of = rng.integers(args.shards, size=args.items)
    labels = np.empty(args.items, dtype=np.int64)
    for s in range(args.shards):
        rows = np.flatnonzero(shard_of == s)
        labels[rows] = shard_labels(s, len(rows))
    exact = exact_top(x, labels, q[:args.recall_queries], args.topk)
    result: dict = {"n_items": args.items, "k_i": K_I, "shards": args.shards,
                    "queries": args.queries, "topk": args.topk, "batch": args.batch,
                    "omp_threads": faiss.omp_get_max_threads()}
    with tempfile.TemporaryDirectory(prefix="curindex-bench-") as tmp:
        for kind in args.types.split(","):
            result[kind] = bench_type(kind, x, shard_of, labels, q, exact, args, Path(tmp))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
