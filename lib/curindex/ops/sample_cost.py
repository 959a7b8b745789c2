"""What a build's task spends per item, measured on a sample of the inputs in this process on
one thread, as one task would (the plan's time model: `curindex.ops.plan`)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from curindex.config import BuildConfig
from curindex.ops.sample import sample_texts

SAMPLE_ITEMS = 64
MAX_SAMPLE_QUERIES = 256  # the sample scores up to this many queries (n_q when fewer)...
SAMPLE_BUDGET_S = 3.0  # ...within about this many seconds at the pair cost of a first sample
WORKER_START_S = 4.0  # a Python worker importing torch and curindex, Spark starting the job


@dataclass(frozen=True)
class SampleCost:
    """What a task spends, measured on a sample (seconds, one thread)."""

    per_item: float  # reading and encoding an item, whatever its queries
    per_pair: float  # one more query against it
    write: float  # its score row in a chunk, at n_q queries
    embed: float  # its bi-encoder embedding
    fixed: float  # a worker's start: the model libraries, the scorer, the queries' encoding
    n_q: int
    measured: float | None  # per item at exactly n_q queries, when the sample scored all

    def item_seconds(self, n_q: int) -> float:
        """One item's score row at `n_q` queries (0: the row holds no score)."""
        if not n_q:
            return self.write
        if n_q == self.n_q and self.measured is not None:
            return self.measured + self.write
        return self.per_item + n_q * self.per_pair + self.write


def sample_cost(cfg: BuildConfig, *, n_q: int, bi: bool) -> SampleCost:
    """A task's costs measured on a sample of the inputs: the scorer built (fixed), then the
    sample scored at two query counts on one thread, as a task scores it."""
    import torch

    from curindex.scoring.base import build_scorer, fingerprint_for, prepare_queries, scorer_errors
    from curindex.scoring.device import driver_device

    items = sample_texts(cfg.items, role="items", n=SAMPLE_ITEMS)
    queries = sample_texts(cfg.queries, role="queries", n=min(n_q, MAX_SAMPLE_QUERIES))
    queries = (queries * n_q)[:min(n_q, MAX_SAMPLE_QUERIES)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        fp = fingerprint_for(cfg.scorer)
        scfg = dataclasses.replace(cfg.scorer, device=driver_device(cfg.scorer.device))
        scorer = build_scorer(dataclasses.replace(
            scfg, batch_size=sample_batch(cfg.scorer.batch_size, len(items), cfg)), fp)
        fixed = WORKER_START_S + time.perf_counter() - t0
        prepared = prepare_queries(scfg, fp, queries)
        if prepared is not None:  # queries encoded once on the driver: part of the start
            scorer.load_queries(queries, prepared)  # type: ignore[attr-defined]

        def timed(q: int, n: int | None = None) -> float:
            t0 = time.perf_counter()
            with scorer_errors(cfg.scorer, where="the plan's sample"):
                scorer.score_block(queries[:q], items[:n])
            return time.perf_counter() - t0

        timed(1, 2)  # warm
        n = len(items)
        one, four = timed(1), timed(min(4, len(queries)))
        # The large sample: as many queries as SAMPLE_BUDGET_S allows at the rough pair cost
        # (all n_q of them when pairs are cheap, so nothing is extrapolated).
        rough = max(0.0, (four - one) / (n * 3))
        q = len(queries) if rough == 0 else int(np.clip(
            (SAMPLE_BUDGET_S - one) / (n * rough), 4, len(queries)))
        big = timed(q) if q > 4 else four
        per_pair = max(0.0, (big - one) / (n * (q - 1))) if q > 1 else 0.0
        per_item = max(0.0, one / n - per_pair)
        if prepared is not None:
            t0 = time.perf_counter()
            prepare_queries(scfg, fp, queries)
            fixed += (time.perf_counter() - t0) * n_q / len(queries)
        embed = _embed_seconds(items, cfg) if bi else 0.0
    finally:
        torch.set_num_threads(before)
    return SampleCost(per_item=per_item, per_pair=per_pair, write=write_seconds(items, n_q),
                      embed=embed, fixed=fixed, n_q=n_q,
                      measured=big / n if q == n_q else None)


def _embed_seconds(items: list[str], cfg: BuildConfig) -> float:
    """One item's bi-encoder embedding, batched as a task batches a block."""
    from curindex.scoring.biencoder import get_biencoder

    encoder = get_biencoder()
    encoder.encode(items[:2])
    batch, encoder.batch_size = encoder.batch_size, sample_batch(
        encoder.batch_size, len(items), cfg)
    try:
        t0 = time.perf_counter()
        encoder.encode(items)
        return (time.perf_counter() - t0) / len(items)
    finally:
        encoder.batch_size = batch


def sample_batch(batch_size: int, n_sample: int, cfg: BuildConfig) -> int:
    """The batch size that pads a sample as a task pads a block: a task sorts a block of
    `block_items` texts by length, so a batch holds texts of nearly one length; batches of
    the same share of the sorted sample span the same share of the lengths."""
    return max(1, min(batch_size, round(batch_size * n_sample / cfg.spark.block_items)))


def write_seconds(texts: list[str], n_q: int, *, rows: int = 2048) -> float:
    """Seconds per item for a task to write the item's score row (its text and `n_q` floats)
    to a score chunk, as the score stage does: `rows` rows made from the sample's texts,
    written as Parquet to memory in the chunks' schema, timed after one warm write."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from curindex.kinds import scorerows

    text = pa.array([texts[i % len(texts)] for i in range(rows)])
    batch = pa.record_batch([
        pa.array([f"item-{i}" for i in range(rows)]), pa.array(np.zeros(rows, np.int32)), text,
        pa.array(np.zeros(rows, bool)),
        scorerows.list_array(np.random.default_rng(0).random((rows, n_q), np.float32))],
        schema=scorerows.ARROW_SCHEMA)
    best = float("inf")
    for _ in range(3):  # the best of three: the write, without others' noise
        t0 = time.perf_counter()
        with pq.ParquetWriter(io.BytesIO(), scorerows.ARROW_SCHEMA) as writer:
            writer.write_batch(batch)
        best = min(best, time.perf_counter() - t0)
    return best / rows
