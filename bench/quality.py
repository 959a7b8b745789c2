"""Retrieval quality on a BEIR folder: Top-k-Recall@budget of curindex's search methods, of the
reference ANNCUR method and of bi-encoder retrieve-and-rerank, on the same held-out queries.

    .venv/bin/python bench/quality.py --data ../shared/data/climate-fever [--test 500]
        [--budgets 100,200,500] [--k 1,10,100] [--max-items N] [--cache DIR]
        [--teacher minilm|mpnet] [--methods a,b,...]

1. `--test` queries are held out (seeded); they are never anchor queries nor used for tuning.
2. Every query (held out or not) is scored against every item by the teacher (`minilm`:
   MaxSim over the bi-encoder's own all-MiniLM-L6-v2 weights; `mpnet`: MaxSim over
   all-mpnet-base-v2, which shares none: `bench/teachers.py`) through the build's own Spark
   score stage (`score_items`, local[2]): the exact score matrix S, kept in `--cache` (keyed
   by the data and the teacher's fingerprint) so a re-run skips it.
3. Each method's index is built by the real pipeline (`run_build`: anchors or training pairs,
   factorize, faiss shards, store) from the non-held-out queries, with a scorer that returns
   S's entries (`cached_scorer`: the same numbers as the model, at lookup speed, so a bench
   run does not re-score the corpus per method). S has a row for every synthetic query a
   method makes (a sparse build's training queries among them); a query it has none for
   would be scored by the teacher itself.
4. Each method is measured with the real `Searcher` on the held-out queries: it spends
   `budget` exact-model calls per query (counted by the Searcher: anchor items, every round)
   and returns its top k by exact score; recall is against S's exact top k over the corpus.

Printed: one JSON object (see the README's retrieval-quality section for the methods).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from teachers import TEACHERS, teacher_config  # noqa: E402

log = logging.getLogger("bench.quality")

# name -> (build config overrides, search kwargs). k_q = 500 anchor queries (or all non-test
# queries if fewer); rcond 1e-15 is np.linalg.pinv's default cutoff.
PLAIN = {"methods": ["cur"]}
REFERENCE = ({"anchors": {"n_items": 100, "items": "random"}, "factorize": {"rcond": 1e-15},
              "index": PLAIN}, {"method": "cur"})
METHODS = {
    "anncur-reference": REFERENCE,
    # Each improvement on its own, over the reference: anchor items spread by k-means over
    # bi-encoder embeddings, or chosen by leverage + pivoted QR from the anchor-query scores.
    "curindex-kmeans-anchors": ({**REFERENCE[0], "anchors": {"n_items": 100, "items": "kmeans"}},
                                {"method": "cur"}),
    "curindex-leverage-anchors": ({**REFERENCE[0],
                                   "anchors": {"n_items": 100, "items": "leverage"}},
                                  {"method": "cur"}),
    # rcond tuned on 80 tuning queries drawn from the non-held-out queries.
    "curindex-tuned-inversion": ({**REFERENCE[0], "anchors": {"n_items": 100, "n_test": 100},
                                  "factorize": {"tune": True, "tune_fraction": 0.8}},
                                 {"method": "cur"}),
    # A small query log (100 queries) as k_q, alone and with 400 synthetic anchor queries.
    "small-log": ({**REFERENCE[0], "anchors": {"n_items": 50}, "k_q": 100, "real_q": 100},
                  {"method": "cur"}),
    "small-log-synthetic": ({**REFERENCE[0], "anchors": {"n_items": 50, "synthetic_queries": 400},
                             "k_q": 500, "real_q": 100}, {"method": "cur"}),
    # k_i = 50 anchors, the rest of the budget over 4 rounds of adaptive search.
    "curindex-adaptive": ({"anchors": {"n_items": 50},
                           "index": {"methods": ["cur", "adaptive"]}},
                          {"method": "adaptive", "rounds": 4}),
    # Round 1 the bi-encoder's top 50 items, 3 adaptive rounds after it.
    "curindex": ({"anchors": {"n_items": 50},
                  "index": {"methods": ["bi-rerank", "cur", "adaptive", "bi-seeded"]}},
                 {"method": "bi-seeded", "rounds": 4, "seed_size": 50}),
    # A fifth of the anchor-query calls per item (k_q / 5), the same search: the bi-encoder
    # similarity feature of the bi-seeded rounds carries the recall.
    "curindex-economy": ({"anchors": {"n_items": 50}, "k_q_divisor": 5,
                          "index": {"methods": ["bi-rerank", "cur", "adaptive", "bi-seeded"]}},
                         {"method": "bi-seeded", "rounds": 4, "seed_size": 50}),
    # What a build serves with no search-method settings: every method validated on the
    # build's own test queries (SHIPPED_TEST of them, half tuning), the served one chosen
    # there, searched with default arguments.
    "shipped": ({"anchors": {"n_items": 50}, "validate": None, "index": None}, {}),
    # The same build validated with pooled truth (each test query's pool scored, not the
    # corpus): its figures beside `shipped`'s exact ones (`pooled_vs_exact`).
    "shipped-pooled": ({"anchors": {"n_items": 50}, "validate": {"ground_truth": "pooled"},
                        "index": None, "_defaults": ("validate",)}, {}),
    # The sparse build kind with its defaults: the non-test queries of the log and synthetic
    # queries made from items, each scored against its bi-encoder neighbours and random items;
    # searched with bi-seeded rounds over the latent vectors.
    "curindex-sparse": ({"index": {"kind": "sparse"}, "sparse": {}},
                        {"method": "bi-seeded", "rounds": 4, "seed_size": 50}),
}
SHIPPED_TEST = 100  # the shipped build's test queries (10 when the query log is too small)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=BENCH.parent.parent / "shared" / "data" /
                   "climate-fever", help="a BEIR folder (corpus.jsonl, queries.jsonl)")
    p.add_argument("--test", type=int, default=500, help="held-out test queries")
    p.add_argument("--budgets", default="100,200,500")
    p.add_argument("--k", default="1,10,100")
    p.add_argument("--anchor-queries", type=int, default=500, help="k_q (at most the rest)")
    p.add_argument("--max-items", type=int, default=0, help="use the first N items (0: all)")
    p.add_argument("--methods", default=",".join(METHODS), help="methods to measure")
    p.add_argument("--cache", type=Path, default=BENCH / "out" / "quality-cache")
    p.add_argument("--synthetic", type=int, default=0,
                   help="synthetic anchor queries for every method (small query logs)")
    p.add_argument("--teacher", choices=TEACHERS, default="minilm",
                   help="the exact model: minilm (MaxSim over the bi-encoder's own weights) or "
                   "mpnet (MaxSim over all-mpnet-base-v2, which shares none)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    if not (args.data / "corpus.jsonl").is_file():
        print(json.dumps({"skipped": f"no BEIR corpus at {args.data}"}))
        return
    budgets = [int(b) for b in args.budgets.split(",")]
    ks = [int(k) for k in args.k.split(",")]
    items, queries = read_beir(args.data, args.max_items)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(queries))
    test, rest = order[: args.test], order[args.test:]
    k_q = min(args.anchor_queries, len(rest) - 10 + args.synthetic)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(BENCH))
    spark = _spark()
    try:
        # Synthetic queries need exact scores too: the same seeded choice the build makes
        # (curindex.pipeline.anchors; a sparse build's training queries are a longer prefix
        # of the same order), scored with the rest.
        n_synthetic = max([args.synthetic] + [
            synthetic_needed(*method_overrides(m, k_q, args.synthetic, len(rest))[:2])
            for m in args.methods.split(",")])
        extra = synthetic_queries(spark, items, n_synthetic)
        teacher = teacher_config(args.teacher)
        s, s_path, seconds = exact_matrix(spark, items, queries + extra, args.cache, teacher)
        out = {"data": str(args.data), "n_items": len(items), "n_queries": len(queries),
               "n_test": len(test), "k_q": k_q, "teacher": args.teacher,
               "scorer": f"maxsim ({teacher.path or 'all-MiniLM-L6-v2, packaged'})",
               "scoring_s": seconds, "exact_model_calls_per_query": budgets, "methods": {},
               "cheap_calls_per_query": {}, "index_bytes": {}, "build_s": {},
               "build_calls_per_item": {}}
        exact_top = np.argsort(-s[test], axis=1, kind="stable")[:, : max(ks)]
        test_texts = [queries[i][1] for i in test]
        manifests: dict[str, dict] = {}
        with tempfile.TemporaryDirectory(prefix="curindex-quality-") as tmp:
            tmp = Path(tmp)
            pool = [queries[i] for i in rest]
            write_jsonl(tmp / "items.jsonl", [{"_id": i, "text": t} for i, t in items])
            write_jsonl(tmp / "queries.jsonl", [{"_id": i, "text": t} for i, t in pool])
            for name in args.methods.split(","):
                overrides, method_q, real_q = method_overrides(name, k_q, args.synthetic,
                                                               len(rest))
                kwargs = METHODS[name][1]
                t0 = time.perf_counter()
                manifest, store = build(spark, tmp, name, overrides, method_q, s_path, items,
                                        queries + extra, pool_size=real_q, teacher=teacher)
                out["build_s"][name] = round(time.perf_counter() - t0, 1)
                out["index_bytes"][name] = {"vectors": manifest["index"]["bytes"],
                                            **manifest["index"].get("extra_bytes", {})}
                out["methods"][name] = measure(store, test_texts, exact_top, ks, budgets, kwargs,
                                               s[test], items)
                bi = out["methods"][name]["search"].startswith("bi-")
                out["cheap_calls_per_query"][name] = 1 if bi else 0
                counts = manifest["counts"]
                out["build_calls_per_item"][name] = {
                    # the index's exact-model pairs per item (a dense build: k_q)
                    "index": round(counts["index_pairs"] / len(items), 3),
                    "test_queries": manifest["anchors"]["n_test"]}
                if manifest.get("sparse"):
                    out.setdefault("sparse", {})[name] = {
                        k: manifest["sparse"][k] for k in (
                            "training_queries", "synthetic_queries", "pairs", "fit")}
                manifests[name] = manifest
                if name.startswith("shipped"):
                    out[name] = {"n_test": manifest["anchors"]["n_test"],
                                 "n_tune": manifest["anchors"]["n_tune"],
                                 "served": manifest["search"]["default"],
                                 "by_budget": [{k: c[k] for k in ("budget", "method", "rounds",
                                                                  "seed_size", "objective")}
                                               for c in manifest["search"].get("by_budget", [])],
                                 "validation_pairs": manifest["counts"]["validation_pairs"],
                                 "ground_truth": manifest["validation"]["ground_truth"]}
                log.info("%s: %s", name, out["methods"][name])
                if (name in ("curindex", "curindex-sparse")  # the bi-encoder index is there
                        and "bi-encoder-rerank" not in out["methods"]):  # measure the baseline
                    out["methods"]["bi-encoder-rerank"] = measure(
                        store, test_texts, exact_top, ks, budgets, {"method": "bi-rerank"},
                        s[test], items)
                    out["cheap_calls_per_query"]["bi-encoder-rerank"] = 1
                    log.info("bi-encoder-rerank: %s", out["methods"]["bi-encoder-rerank"])
        if {"shipped", "shipped-pooled"} <= set(manifests):
            out["pooled_vs_exact"] = pooled_vs_exact(manifests["shipped"],
                                                     manifests["shipped-pooled"])
    finally:
        spark.stop()
    print(json.dumps(out, indent=1))


def pooled_vs_exact(exact: dict, pooled: dict) -> dict:
    """Per method of the two builds (the same test queries and searches), each figure's
    exact and pooled recall on the reporting queries, and the largest difference."""
    rows, worst = {}, 0.0
    for e, p in zip(exact["search"]["methods"], pooled["search"]["methods"], strict=True):
        name = f"{e['method']} ({e['rounds']}, {e['seed_size']})"
        rows[name] = {f: [round(v, 4), round(p["recall"].get(f, float("nan")), 4)]
                      for f, v in e["recall"].items()}
        worst = max([worst, *(abs(v - p["recall"][f]) for f, v in e["recall"].items()
                              if f in p["recall"])])
    return {"methods": rows, "max_abs_difference": round(worst, 4),
            "pool": pooled["validation"].get("pool")}


def read_beir(folder: Path, max_items: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(id, text) of items (``title: text``, or ``text`` when the title is empty) and queries."""
    def rows(name: str):
        with open(folder / name, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    items = [(str(d["_id"]), f"{d['title']}: {d['text']}" if d.get("title") else d["text"])
             for d in rows("corpus.jsonl")]
    queries = [(str(d["_id"]), d["text"]) for d in rows("queries.jsonl")]
    return items[:max_items] if max_items else items, queries


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def _spark():
    from benchspark import local_session

    return local_session("curindex-bench-quality")


def exact_matrix(spark, items, queries, cache: Path, cfg) -> tuple[np.ndarray, Path, float]:
    """S [n_queries, n_items] float32 of the teacher (`cfg`, a ScorerConfig), from the build's
    score stage; cached under `cache` by a digest of the texts and the scorer fingerprint."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curindex.pipeline.score import score_items
    from curindex.scoring.base import fingerprint_for

    fp = fingerprint_for(cfg)
    digest = hashlib.sha256(json.dumps([items, queries, fp]).encode()).hexdigest()[:16]
    path = cache / f"scores-{digest}.npy"
    if path.is_file():
        log.info("exact scores from %s", path)
        return np.load(path, allow_pickle=False), path, 0.0
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="curindex-quality-score-") as tmp:
        ids = [f"{j:08d}" for j in range(len(items))]
        pq.write_table(pa.table({"id": ids, "text": [t for _, t in items]}), f"{tmp}/items.parquet")
        t0 = time.perf_counter()
        score_items(spark, spark.read.parquet(f"{tmp}/items.parquet"),
                    queries=[t for _, t in queries], scorer_cfg=cfg, fingerprint=fp,
                    num_shards=1, partitions=8, block_items=512, out_path=f"{tmp}/scores",
                    n_items=len(items), progress_every_s=30.0)
        seconds = round(time.perf_counter() - t0, 1)
        table = pq.read_table(f"{tmp}/scores", columns=["item_id", "scores"]).sort_by("item_id")
        s = np.array(table.column("scores").to_pylist(), dtype=np.float32).T
    np.save(path, s, allow_pickle=False)
    return s, path, seconds


def method_overrides(name: str, k_q: int, synthetic: int, rest: int
                     ) -> tuple[dict, int, int | None]:
    """A method's config overrides on this split, its k_q and the log queries its build sees
    (None: all): `shipped` holds out its own test queries (SHIPPED_TEST, or 10 when the `rest`
    queries the build sees are too few), and `--synthetic` makes that many of every dense
    build's anchor queries."""
    overrides = dict(METHODS[name][0])
    method_q = overrides.pop("k_q", k_q)
    real_q = overrides.pop("real_q", None)
    divisor = overrides.pop("k_q_divisor", 1)
    method_q //= divisor
    if name.startswith("shipped"):  # its own test queries choose its search
        n_test = SHIPPED_TEST if method_q - synthetic + SHIPPED_TEST <= rest else 10
        overrides["anchors"] = {**overrides["anchors"], "n_test": n_test}
    if synthetic:
        overrides["anchors"] = {**overrides.get("anchors", {}),
                                "synthetic_queries": synthetic // divisor}
    return overrides, method_q, real_q


def synthetic_needed(overrides: dict, k_q: int) -> int:
    """How many synthetic queries a method's build makes, all a prefix of one seeded order of
    the items: its dense anchor queries (or a sparse build's training queries, `[sparse]
    synthetic_queries`), then its synthetic tuning queries (`[validate] synthetic_tuning`,
    where its test queries leave too few to tune on)."""
    from curindex.config import config_from_dict, synthetic_tests

    cfg = config_from_dict(method_config(overrides, k_q, items={"path": "-"},
                                         queries={"path": "-"}))
    made = cfg.sparse.synthetic_queries if cfg.index.kind == "sparse" else \
        cfg.anchors.synthetic_queries
    return made + synthetic_tests(cfg)


def synthetic_queries(spark, items, n: int) -> list[tuple[str, str]]:
    """The synthetic anchor queries a build with `synthetic_queries = n` (seed 0) makes."""
    if not n:
        return []
    from curindex.pipeline.anchors import SYNTHETIC_PREFIX, seeded_sample, synthetic_query

    df = spark.createDataFrame(items, "id string, text string")
    return [(SYNTHETIC_PREFIX + i, synthetic_query(t))
            for i, t in seeded_sample(df, n, seed=0, salt="synthetic")]


def method_config(overrides: dict, k_q: int, **sections) -> dict:
    """A method's build config: the bench's base (a fixed search: no synthetic tuning query),
    `sections` (sources, scorer, store), then the method's overrides (None, or a section named
    in `_defaults`: that section from the build's defaults)."""
    raw = {
        "anchors": {"n_queries": k_q, "n_items": 50, "n_test": 10, "seed": 0},
        "factorize": {"rcond": 1e-3, "min_rank": 2},
        "index": {"num_shards": 4},
        "validate": {"ks": [1, 10], "budgets": [200], "synthetic_tuning": 0},
        **sections,
    }
    overrides = dict(overrides)
    defaults = overrides.pop("_defaults", ())
    for section, values in overrides.items():
        if values is None or section in defaults:  # (shards aside): no method settings
            raw[section] = {k: v for k, v in raw.get(section, {}).items() if k == "num_shards"}
        if values is not None:
            raw[section] = {**raw.get(section, {}), **values}
    return raw


def build(spark, tmp: Path, name: str, overrides: dict, k_q: int, s_path: Path, items, queries,
          pool_size: int | None = None, teacher=None):
    """One method's index: run_build over the bench corpus with the cached scorer; with
    `pool_size` the build's query source is only that many of the non-held-out queries (plus
    its own test queries)."""
    from curindex.config import config_from_dict
    from curindex.pipeline import run_build
    from curindex.store import Store

    index_file = tmp / "texts.json"
    if not index_file.exists():
        index_file.write_text(json.dumps({"items": [t for _, t in items],
                                          "queries": [t for _, t in queries]}))
    query_file = tmp / "queries.jsonl"
    if pool_size is not None:
        with open(query_file, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f][: pool_size + 10]  # + the build's tests
        query_file = write_jsonl(tmp / f"queries-{pool_size}.jsonl", rows)
    raw = method_config(overrides, k_q, **{
        "items": {"path": str(tmp / "items.jsonl"), "text_columns": ["text"]},
        "queries": {"path": str(query_file)},
        "scorer": {"kind": "callable", "target": "cached_scorer:cached",
                   "options": {"scores": str(s_path), "texts": str(index_file),
                               # queries S has no row for (a sparse build's synthetic
                               # training queries) are scored by the teacher itself
                               "teacher_kind": teacher.kind, "teacher_path": teacher.path}},
        "store": {"uri": str(tmp / f"store-{name}")},
        "spark": {"score_partitions": 8, "block_items": 512}})
    cfg = config_from_dict(raw)
    result = run_build(spark, cfg, version="v1", publish=True)
    return result.manifest.to_dict(), Store.open(cfg.store.uri)


def measure(store, test_texts, exact_top, ks, budgets, kwargs, s_test, items) -> dict:
    """Top-k-Recall@budget of one search method through the real Searcher (`kwargs`: its
    method arguments; none: the version's served search)."""
    from curindex.search import Searcher

    searcher = Searcher.open(store.uri, scorer_target="cached_scorer:cached")
    col = {iid: j for j, (iid, _) in enumerate(items)}
    k_i = len(searcher.anchor_ids)
    spec = searcher.spec(**kwargs)
    out = {"search": spec.describe()}
    for budget in budgets:
        if spec.seed == "anchors" and budget <= k_i:
            # The Searcher needs budget > k_i; at budget = k_i the pool is the anchors alone.
            anchors = np.array([col[a] for a in searcher.anchor_ids])
            got = [anchors[np.argsort(-s_test[t, anchors], kind="stable")]
                   for t in range(len(test_texts))]
            calls = k_i
        else:
            res = searcher.search(test_texts, k=max(ks), budget=budget, **kwargs)
            got = [np.array([col[i] for i in r.ids]) for r in res]
            calls = max(r.model_calls for r in res)
            assert calls <= budget, (calls, budget)
        for k in ks:
            if k < budget:
                hits = [len(set(got[t][:k].tolist()) & set(exact_top[t, :k].tolist())) / k
                        for t in range(len(test_texts))]
                out[f"{k}@{budget}"] = round(float(np.mean(hits)), 4)
        out[f"calls@{budget}"] = int(calls)
    return out


if __name__ == "__main__":
    main()
