"""How the whole build scales with the corpus: `run_build` at generated sizes, timed and measured.

For each size (`--sizes`, items) a corpus of `item-<n>` ids and short generated texts and a query
set (`--queries` anchor + `--test-queries` test queries) are written as Parquet to a temporary
folder, and the real pipeline (`curindex.pipeline.run_build`: prepare, score, factorize,
write_shards, validate, commit) builds one version of it into a fresh store, in Spark
`local[2]` with a SparkSession this script creates (`--driver-memory`). The scorer is
`scale:HashScorer` (`kind = "callable"`): a cheap, deterministic rank-`RANK` bilinear form of a
hash of each text, vectorised numpy, so the figures measure the pipeline, not a model.

Per size (one JSON object each, printed as a JSON list on stdout; progress goes to stderr):

- `wall_s`, `items_per_s`: `run_build` from its call to its return (after an unreported
  `--warmup` build of 2,000 items, so no size pays the JVM's and Python workers' start-up);
- `driver_peak_rss_mb`: the driver JVM's peak RSS (its VmHWM, reset before each size through
  `/proc/<pid>/clear_refs`, and VmRSS polled every 0.2 s) plus the Python driver's;
  `driver_jvm_peak_rss_mb` and `driver_python_maxrss_mb` (`ru_maxrss`: the process's peak so
  far, so with sizes in ascending order the largest size's own; the corpus is generated in a
  child process so it is the pipeline's) apart;
- `executor_peak_rss_mb`: the largest RSS polled of any Python worker (the processes under the
  JVM: in local mode the executor is the driver JVM, the scoring runs in its Python workers);
  `executor_peak_total_rss_mb`: the peak of their sum (forked workers share pages, so this
  counts some twice);
- `bytes_written`: the committed version folder plus the work folder (the score chunks, at its
  largest while the build ran; it is deleted at commit), and each apart;
- `stages`: seconds per stage, from the manifest's `timings_s`.

`--cluster` runs the builds on a Spark standalone cluster on 127.0.0.1 (two workers, one core
each, started from the pip-installed pyspark and stopped at the end) instead of `local[2]`: the
driver JVM then holds only the driver, while in local mode it also runs the executor's tasks,
so only `--cluster` measures the driver alone. The executor figures then cover every process
under the workers (executor JVMs and their Python workers).

`--score-rate R` (pairs/s: the cross-encoder's `stage_pairs_per_s` from `bench/scoring.py`, the
Spark score stage with the benchmark model on this machine) adds, per size, `cross_encoder`:
the score stage's time extrapolated to that model (`n_items x n_queries_scored / R`), the
non-scoring stages (factorize, write_shards, validate; measured here, they do not depend
on the scorer) and their share of the whole build. prepare (reading and checking the inputs)
is counted with neither.

`--incremental F` adds, per size, an incremental build (`run_build(..., base=...)`) on a corpus
where a fraction F of the items changed text, F/2 were deleted and F/2 are new, after a full
build with `[index] keep_scores = true`: its wall time, stages, pairs scored and shards written
and shared, under `incremental`.

    .venv/bin/python bench/scale.py                              # 100k and 1M: ~5 min, 2 cores
    .venv/bin/python bench/scale.py --sizes 20000,100000         # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
RANK = 32  # the hash scorer's rank
HASH_BYTES = 32  # hash features per text
log = logging.getLogger("bench.scale")


class HashScorer:
    """score(q, i) = f(q) . W . f(i): f(text) = the bytes of its blake2b digest, centred and
    scaled; W a fixed random rank-`RANK` matrix (seed from the options). Deterministic in any
    process; a few microseconds per text; scores of a block in one matrix product."""

    def __init__(self, cfg) -> None:
        rng = np.random.default_rng(int(cfg.options.get("seed", "0")))
        a = rng.standard_normal((HASH_BYTES, RANK))
        b = rng.standard_normal((HASH_BYTES, RANK))
        self.w = (a @ b.T / RANK).astype(np.float32)  # [HASH_BYTES, HASH_BYTES], rank RANK

    @staticmethod
    def features(texts) -> np.ndarray:
        digests = b"".join(hashlib.blake2b(t.encode(), digest_size=HASH_BYTES).digest()
                           for t in texts)
        raw = np.frombuffer(digests, dtype=np.uint8).reshape(len(texts), HASH_BYTES)
        return (raw.astype(np.float32) - 127.5) / 73.9  # about unit variance

    def score_block(self, queries, items) -> np.ndarray:
        return self.features(queries) @ self.w @ self.features(items).T


def hash_scorer(cfg) -> HashScorer:
    return HashScorer(cfg)


# -- generated data --

WORDS = np.array((
    "river mountain cloud data index search model query vector matrix forest ocean signal "
    "engine planet orbit carbon climate energy solar wind storm rain city market price bank "
    "music piano guitar song film actor stage novel poem language grammar python spark table "
    "window garden station bridge harbor island valley desert winter summer copper silver"
).split())


def texts(n: int, *, seed: int, min_words: int, max_words: int) -> list[str]:
    """n short texts of random words (vectorised: one draw for all words)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_words, max_words + 1, size=n)
    words = WORDS[rng.integers(0, len(WORDS), size=int(lengths.sum()))].tolist()
    out, at = [], 0
    for k in lengths.tolist():
        out.append(" ".join(words[at:at + k]))
        at += k
    return out


def write_corpus(folder: Path, n_items: int, n_queries: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    items, queries = folder / "items.parquet", folder / "queries.parquet"
    pq.write_table(pa.table({"id": [f"item-{i}" for i in range(n_items)],
                             "text": texts(n_items, seed=1, min_words=4, max_words=12)}), items,
                   row_group_size=100_000)
    pq.write_table(pa.table({"id": [f"query-{i}" for i in range(n_queries)],
                             "text": texts(n_queries, seed=2, min_words=2, max_words=5)}), queries)
    return items, queries


def write_corpus_apart(folder: Path, n_items: int, n_queries: int) -> tuple[Path, Path]:
    """`write_corpus` in a child process: the generated texts never reach the driver's Python
    heap, so its peak RSS is the pipeline's own."""
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(
        target=write_corpus, args=(folder, n_items, n_queries))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"generating {n_items} items failed (exit code {proc.exitcode})")
    return folder / "items.parquet", folder / "queries.parquet"


# -- measuring --

def _proc_tree() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    children, out, todo = _proc_tree(), [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def status_kb(pid: int, field: str) -> int:
    """A `VmRSS`/`VmHWM` figure of /proc/<pid>/status in kB (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # deleted while walked
                total += os.stat(os.path.join(root, name)).st_size
    return total


class Sampler:
    """Polls the driver JVM's RSS, its Python workers' RSS and the work folder's size."""

    def __init__(self, jvm_pid: int, work: Path, worker_roots: list[int] | None = None,
                 every_s: float = 0.2) -> None:
        # The executors' processes: under the driver JVM in local mode, else under the workers.
        self.worker_roots = worker_roots or [jvm_pid]
        self.jvm_pid, self.work, self.every_s = jvm_pid, work, every_s
        self.jvm_kb = self.worker_kb = self.workers_total_kb = self.work_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self, with_work: bool) -> None:
        self.jvm_kb = max(self.jvm_kb, status_kb(self.jvm_pid, "VmRSS"))
        rss = [status_kb(p, "VmRSS") for root in self.worker_roots for p in descendants(root)]
        self.worker_kb = max([self.worker_kb, *rss])
        self.workers_total_kb = max(self.workers_total_kb, sum(rss))
        if with_work:
            self.work_bytes = max(self.work_bytes, tree_bytes(self.work))

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every_s):
            self.sample(with_work=n % 5 == 0)  # the folder once a second
            n += 1

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# -- the benchmark --

def session(driver_memory: str, master: str = "local[2]"):
    from benchspark import local_session

    return local_session("curindex-bench-scale", master,
                         **{"spark.driver.memory": driver_memory})


def change_corpus(items: Path, out: Path, fraction: float) -> dict:
    """A copy of the corpus where `fraction` of the items changed text, `fraction / 2` were
    deleted and as many new ones added (chosen by a fixed seed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(items)
    n = table.num_rows
    rng = np.random.default_rng(7)
    picked = rng.permutation(n)
    n_changed, n_deleted = int(n * fraction), int(n * fraction / 2)
    changed = np.zeros(n, bool)
    changed[picked[:n_changed]] = True
    keep = np.ones(n, bool)
    keep[picked[n_changed:n_changed + n_deleted]] = False
    text = pc.if_else(pa.array(changed), pc.binary_join_element_wise(
        table.column("text"), pa.scalar(" changed"), ""), table.column("text"))
    table = pa.table({"id": table.column("id"), "text": text}).filter(pa.array(keep))
    new = pa.table({"id": [f"new-{i}" for i in range(n_deleted)],
                    "text": texts(n_deleted, seed=3, min_words=4, max_words=12)})
    pq.write_table(pa.concat_tables([table, new]), out, row_group_size=100_000)
    return {"changed": n_changed, "deleted": n_deleted, "new": n_deleted}


def build_one(spark, sampler_roots, n_items: int, args, tmp: Path) -> dict:
    from curindex.config import config_from_dict
    from curindex.pipeline import run_build
    from curindex.store import Store

    items, queries = write_corpus_apart(tmp / "data", n_items, args.queries + args.test_queries)
    store = tmp / "store"
    cfg = config_from_dict({
        "items": {"path": str(items), "id_column": "id", "text_columns": ["text"]},
        "queries": {"path": str(queries), "id_column": "id", "text_columns": ["text"]},
        "anchors": {"n_queries": args.queries, "n_items": args.anchors,
                    "n_test": args.test_queries, "seed": 0},
        "scorer": {"kind": "callable", "target": "scale:hash_scorer"},
        "index": {"num_shards": args.shards, "keep_scores": bool(args.incremental),
                  "methods": args.methods.split(","), "kind": args.kind},
        "validate": {"ground_truth": args.ground_truth},
        "store": {"uri": str(store)},
        "spark": {"block_items": args.block_items, "score_partitions": args.partitions},
        **({"sparse": {"synthetic_queries": args.synthetic}} if args.kind == "sparse" else {}),
    })
    jvm_pid, worker_roots = sampler_roots
    reset = reset_peak(jvm_pid)
    log.info("%s items: building", f"{n_items:,}")
    with Sampler(jvm_pid, store / "_work", worker_roots) as sampler:
        t0 = time.perf_counter()
        result = run_build(spark, cfg, version="bench")
        wall = time.perf_counter() - t0
        sampler.sample(with_work=False)
    jvm_kb = max(sampler.jvm_kb, status_kb(jvm_pid, "VmHWM") if reset else 0)
    python_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    version_bytes = tree_bytes(Path(Store.open(str(store)).root) / "versions" / "bench")
    manifest = result.manifest.to_dict()
    out = {
        "n_items": n_items,
        "n_queries_scored": args.queries + args.test_queries,
        "wall_s": round(wall, 2),
        "items_per_s": round(n_items / wall, 1),
        "driver_peak_rss_mb": round((jvm_kb + python_kb) / 1024, 1),
        "driver_jvm_peak_rss_mb": round(jvm_kb / 1024, 1),
        "driver_python_maxrss_mb": round(python_kb / 1024, 1),
        "executor_peak_rss_mb": round(sampler.worker_kb / 1024, 1),
        "executor_peak_total_rss_mb": round(sampler.workers_total_kb / 1024, 1),
        "bytes_written": version_bytes + sampler.work_bytes,
        "version_bytes": version_bytes,
        "work_peak_bytes": sampler.work_bytes,
        "stages": manifest["timings_s"],
        "effective_rank": manifest["factorization"]["effective_rank"],
        "recall": manifest["validation"]["recall"],
        "kind": args.kind,
        # exact-model pairs: the index's (a dense build: items x k_q; a sparse one: its
        # training pairs, whatever the corpus) and validation's (exact or pooled truth)
        "index_pairs": manifest["counts"]["index_pairs"],
        "validation_pairs": manifest["counts"]["validation_pairs"],
        "ground_truth": manifest["validation"]["ground_truth"],
    }
    pool = manifest["validation"].get("pool")
    if pool:
        out["pool"] = {k: pool[k] for k in ("depth", "audit_items", "pairs_per_query",
                                            "mean_pool_size", "misses")}
        out["recall_bounds"] = manifest["validation"]["recall_bounds"]
    if args.compare_exact and manifest["validation"]["ground_truth"] == "pooled":
        out["exact"] = exact_check(spark, cfg, manifest, tmp)
    if manifest.get("plan"):
        estimate, measured = manifest["plan"]["score_seconds"], manifest["timings_s"]["score"]
        out["plan"] = {"score_s_estimated": estimate, "score_s_measured": measured,
                       "estimate_over_measured": round(estimate / measured, 3)
                       if measured else None}
    if args.score_rate:
        score_s = n_items * out["n_queries_scored"] / args.score_rate
        other = sum(v for k, v in manifest["timings_s"].items() if k not in ("prepare", "score"))
        out["cross_encoder"] = {"score_pairs_per_s": args.score_rate,
                                "score_s_extrapolated": round(score_s, 1),
                                "non_scoring_s": round(other, 2),
                                "non_scoring_fraction": round(other / (other + score_s), 6)}
    if args.reader:
        out["reader"] = reader_memory(store)
    if args.incremental:
        out["incremental"] = build_incremental(spark, cfg, items, args.incremental, tmp)
    log.info("%s items: %s", f"{n_items:,}", json.dumps(out))
    return out


def exact_check(spark, cfg, pooled: dict, tmp: Path) -> dict:
    """The same build with exact truth (every test query against every item): its recall
    for each figure of the pooled build's served search, and whether the pooled build's
    bounds (pooled recall minus the audit's upper estimate of what the pools missed) hold it
    (methods whose tuned parameters differ between the two builds are left out)."""
    import dataclasses

    from curindex.pipeline import run_build

    exact_cfg = dataclasses.replace(
        cfg, validate=dataclasses.replace(cfg.validate, ground_truth="exact"),
        store=dataclasses.replace(cfg.store, uri=str(tmp / "store-exact")))
    exact = run_build(spark, exact_cfg, version="bench-exact").manifest.to_dict()
    rows, v = {}, pooled["validation"]
    served = {(m["method"], m["rounds"], m["seed_size"]): m for m in exact["search"]["methods"]}
    for m in pooled["search"]["methods"]:
        e = served.get((m["method"], m["rounds"], m["seed_size"]))
        if e is None:
            continue
        for name, value in m["recall"].items():
            low = value - v["pool"]["misses"][name][2] / v["n_test"] / int(name.split("@")[0])
            rows[f"{m['method']} {name}"] = {
                "pooled": value, "exact": e["recall"][name],
                "within_bounds": low - 1e-9 <= e["recall"][name] <= value + 1e-9}
    return {"validation_pairs": exact["counts"]["validation_pairs"], "figures": rows,
            "all_within_bounds": all(r["within_bounds"] for r in rows.values()),
            "max_abs_difference": max(abs(r["pooled"] - r["exact"]) for r in rows.values())}


def reader_memory(store: Path) -> dict:
    """`bench/reader.py` on the version just built, in a fresh process (published first)."""
    import subprocess

    from curindex.ops.publish import publish_version
    from curindex.store import Store

    publish_version(Store.open(str(store)), "bench")
    done = subprocess.run([sys.executable, str(BENCH / "reader.py"), "--store", str(store)],
                          capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_incremental(spark, cfg, items: Path, fraction: float, tmp: Path) -> dict:
    import dataclasses

    from curindex.pipeline import run_build

    changed = tmp / "data" / "items-changed.parquet"
    counts = change_corpus(items, changed, fraction)
    cfg = dataclasses.replace(cfg, items=dataclasses.replace(cfg.items, path=str(changed)))
    log.info("incremental build: %s", counts)
    t0 = time.perf_counter()
    manifest = run_build(spark, cfg, version="bench-inc", base="bench").manifest.to_dict()
    wall = time.perf_counter() - t0
    inc = manifest["incremental"]
    return {"fraction": fraction, **counts, "wall_s": round(wall, 2),
            "pairs_scored": manifest["counts"]["pairs_scored"],
            "detached_anchors": len(manifest["anchors"]["detached"]),
            "shards_written": len(inc["shards_written"]),
            "shards_shared": len(inc["shards_shared"]), "stages": manifest["timings_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="corpus sizes, comma-separated")
    p.add_argument("--queries", type=int, default=256, help="anchor queries (k_q)")
    p.add_argument("--anchors", type=int, default=128, help="anchor items (k_i)")
    p.add_argument("--test-queries", type=int, default=64, help="held-out test queries")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--partitions", type=int, default=0, help="score partitions (0: 4 x cores)")
    p.add_argument("--block-items", type=int, default=1024)
    p.add_argument("--driver-memory", default="2g")
    p.add_argument("--cluster", action="store_true",
                   help="run on a standalone cluster on 127.0.0.1 (2 workers x 1 core)")
    p.add_argument("--score-rate", type=float, default=0.0, metavar="R",
                   help="cross-encoder stage pairs/s (bench/scoring.py) to extrapolate to")
    p.add_argument("--incremental", type=float, default=0.0, metavar="F",
                   help="also time an incremental build with a fraction F of items changed")
    p.add_argument("--methods", default="",
                   help="[index] methods of the builds (default: cur,adaptive, or a sparse "
                        "build's bi-rerank,bi-seeded; the bi-encoder methods embed every "
                        "item with MiniLM, which dominates a build with the hash scorer)")
    p.add_argument("--kind", choices=("dense", "sparse"), default="dense",
                   help="[index] kind (sparse: the items are embedded with MiniLM, which "
                        "dominates a build with the hash scorer)")
    p.add_argument("--synthetic", type=int, default=2000,
                   help="a sparse build's synthetic training queries")
    p.add_argument("--ground-truth", choices=("auto", "exact", "pooled"), default="auto",
                   help="[validate] ground_truth")
    p.add_argument("--compare-exact", action="store_true",
                   help="with pooled truth, also build with exact truth and compare the figures")
    p.add_argument("--reader", action="store_true",
                   help="also measure the reader's memory on each version (bench/reader.py)")
    p.add_argument("--warmup", type=int, default=2000,
                   help="items of an unreported first build that starts the JVM's code paths "
                        "and the Python workers, so every size is measured warm (0: none)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    args.methods = args.methods or ("bi-rerank,bi-seeded" if args.kind == "sparse"
                                    else "cur,adaptive")

    # Spark's Python workers run this interpreter and import the scorer from bench/; set before
    # the JVM starts, which they inherit their environment from.
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(BENCH))

    with contextlib.ExitStack() as stack:
        master, worker_roots = "local[2]", None
        if args.cluster:
            sys.path.insert(0, str(BENCH.parent / "tests"))
            from cluster import standalone_cluster

            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spark-")))
            cl = stack.enter_context(standalone_cluster(root, env=dict(os.environ)))
            master, worker_roots = cl.url, [cl.worker_pid(i) for i in (1, 2)]
        spark = session(args.driver_memory, master)
        stack.callback(spark.stop)
        roots = (int(spark.sparkContext._jvm.ProcessHandle.current().pid()), worker_roots)
        results = []
        if args.warmup:
            with tempfile.TemporaryDirectory(prefix="curindex-bench-scale-") as tmp:
                build_one(spark, roots, args.warmup, args, Path(tmp))
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="curindex-bench-scale-") as tmp:
                results.append(build_one(spark, roots, n, args, Path(tmp)))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
