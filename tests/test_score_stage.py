"""The Spark score stage: output equals the scorer called directly, progress is logged."""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from curindex.config import ScorerConfig
from curindex.pipeline.progress import ProgressLogger, progress_line
from curindex.pipeline.score import score_items
from curindex.scoring.base import build_scorer, fingerprint_for
from support import make_texts


def test_progress_line_rate_and_eta():
    line = progress_line("score", 250, 1000, 40, 10.0)  # 10,000 pairs in 10 s
    assert line == "score: 250/1,000 items (25.0%), 1,000.0 pairs/s, ETA 30s"
    assert progress_line("score", 0, 1000, 40, 5.0).endswith("0.0 pairs/s, ETA unknown")
    assert "ETA 1h00m" in progress_line("score", 1, 2, 1, 3600.0)
    assert "ETA 2m05s" in progress_line("score", 2, 3, 1, 250.0)
    # A retried task may count its items twice: never more than the total.
    assert progress_line("score", 12, 10, 1, 1.0).startswith("score: 10/10 items (100.0%)")
    assert progress_line("score", 7, None, 2, 7.0) == "score: 7 items scored, 2.0 pairs/s, 7s in"
    # a pass that scores no pair (a sparse build's embeddings) gives its own rate
    assert progress_line("score", 300, 600, 0, 10.0) == \
        "score: 300/600 items (50.0%), 30.0 items/s, ETA 10s"
    assert progress_line("pairs", 500, 1000, 1, 5.0, unit="pairs") == \
        "pairs: 500/1,000 pairs (50.0%), 100.0 pairs/s, ETA 5s"


def test_progress_logger_logs_at_a_steady_rate(caplog):
    done = iter(range(100))
    with (
        caplog.at_level(logging.INFO, logger="curindex.pipeline"),
        ProgressLogger("score", lambda: next(done), total=100, pairs_per_item=1, every_s=0.05),
    ):
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("score: ")]
    assert len(lines) >= 4  # ~6 ticks plus the final line


def _items_df(spark, texts):
    return spark.createDataFrame([(i, t) for i, t in texts], "id string, text string")


def _stage_scores(tmp_path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(tmp_path / "scores").sort_by("item_id")
    return table.column("item_id").to_pylist(), np.array(table.column("scores").to_pylist())


@pytest.mark.spark
def test_score_stage_equals_direct_scores_and_logs_progress(spark, tmp_path, caplog):
    items = make_texts(200, seed=5, prefix="doc")
    queries = [t for _, t in make_texts(7, seed=6, prefix="q", min_words=2, max_words=4)]
    cfg = ScorerConfig(kind="toy", options={"dim": "8"})
    with caplog.at_level(logging.INFO, logger="curindex.pipeline"):
        score_items(spark, _items_df(spark, items), queries=queries, scorer_cfg=cfg,
                    fingerprint=fingerprint_for(cfg), num_shards=3, partitions=4,
                    block_items=16, out_path=str(tmp_path / "scores"), n_items=len(items),
                    progress_every_s=0.2)
    ids, got = _stage_scores(tmp_path)
    want = build_scorer(cfg).score_block(queries, [t for _, t in sorted(items)])
    assert ids == sorted(i for i, _ in items)
    np.testing.assert_allclose(got, want.T, rtol=1e-6)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("score: ")]
    assert lines and lines[-1].startswith("score: 200/200 items (100.0%), ")
    assert spark.sparkContext.getLocalProperty("spark.job.description") is None


@pytest.mark.spark
def test_maxsim_stage_uses_queries_encoded_on_the_driver(spark, tmp_path):
    items = make_texts(24, seed=7, prefix="doc")
    queries = ["how to open a file", "sort numbers", "x"]
    cfg = ScorerConfig(kind="maxsim-minilm", max_query_tokens=16, max_item_tokens=24,
                       batch_size=8)
    score_items(spark, _items_df(spark, items), queries=queries, scorer_cfg=cfg,
                fingerprint=fingerprint_for(cfg), num_shards=2, partitions=2,
                block_items=8, out_path=str(tmp_path / "scores"))
    _, got = _stage_scores(tmp_path)
    want = build_scorer(cfg).score_block(queries, [t for _, t in sorted(items)])
    np.testing.assert_allclose(got, want.T, atol=1e-5)
