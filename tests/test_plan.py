"""A build's plan against what the build then counts and writes."""

from __future__ import annotations

import json

import pytest

from curindex.config import config_from_dict
from curindex.ops.plan import plan_build, rate_from_history
from curindex.ops.sample import count_rows, sample_texts
from curindex.pipeline import run_build
from support import tiny_config, to_toml

pytestmark = pytest.mark.spark


@pytest.mark.parametrize("encoding", ["float16", "sq8"])
def test_the_plans_pairs_and_bytes_equal_what_the_build_records(spark, tiny_corpus, encoding):
    raw = tiny_config(tiny_corpus, index={"methods": ["cur", "adaptive", "bi-rerank"],
                                          "encoding": encoding, "num_shards": 3})
    cfg = config_from_dict(raw)
    plan = plan_build(cfg, slots=2)
    m = run_build(spark, cfg, version="p").manifest
    assert m.plan is not None and m.plan.pairs == plan.pairs  # recorded by the build itself
    assert plan.pairs["total"] == m.counts.pairs_scored == 300 * (40 + 10)
    assert plan.pairs["anchor"] == 300 * 40 and plan.pairs["test"] == 300 * 10
    assert plan.items == m.counts.items == 300 and plan.biencoder_items == 300
    sizes = {rel: f.size for rel, f in m.files.items()}
    vectors = sum(sizes[s.index] for s in m.index.shards)
    extra = sum(sizes[s.extra_index] for s in m.index.shards)
    assert plan.bytes["vectors"] == vectors
    assert plan.bytes["extra"] == extra == m.index.extra_bytes["x"]
    assert plan.score_seconds > 0 and plan.item_seconds > 0 and plan.slots == 2

    # The next build of this store plans from this build's measured stage.
    from curindex.store import Store

    listing = Store.open(cfg.store.uri).versions_listing()[0]
    history = rate_from_history(listing, fingerprint=m.scorer.fingerprint, bi=True, n_q=50)
    assert history is not None and history.version == "p" and history.slots == 2
    assert history.pairs_per_s == pytest.approx(300 * 50 / m.timings_s["score"])
    again = plan_build(cfg, slots=4, history=history)
    assert again.source == "version p"
    assert again.score_seconds == pytest.approx(m.timings_s["score"] / 2, abs=0.06)
    assert rate_from_history(listing, fingerprint="other", bi=True, n_q=50) is None
    assert rate_from_history(listing, fingerprint=m.scorer.fingerprint, bi=False, n_q=50) is None
    assert rate_from_history(listing, fingerprint=m.scorer.fingerprint, bi=True, n_q=60) is None


def test_history_skips_incremental_resumed_and_other_builds():
    def manifest(fp, *, this_run=1000, total=1000, full=1000, bi=0, n_q=10, score=10.0):
        return {"scorer": {"fingerprint": fp}, "timings_s": {"score": score},
                "counts": {"pairs_scored": total, "pairs_scored_this_run": this_run},
                "plan": {"slots": 2, "biencoder_items": bi, "pairs": {"total": full},
                         "anchor_queries": n_q - 2, "test_queries": 2}}

    listing = [("v1", manifest("a", score=4.0)),
               ("resumed", manifest("a", this_run=10)),
               ("incremental", manifest("a", this_run=10, total=10)),
               ("other scorer", manifest("b")), ("other queries", manifest("a", n_q=12)),
               ("bi", manifest("a", bi=5)), ("no plan", {"scorer": {"fingerprint": "a"}})]
    got = rate_from_history(listing, fingerprint="a", bi=False, n_q=10)
    assert (got.version, got.pairs_per_s, got.slots) == ("v1", 250.0, 2)
    assert rate_from_history(listing, fingerprint="a", bi=True, n_q=10).version == "bi"
    assert rate_from_history(listing, fingerprint="a", bi=False, n_q=12).version == \
        "other queries"
    assert rate_from_history(listing[1:], fingerprint="a", bi=False, n_q=10) is None


def test_the_plan_from_a_rate_and_the_cli(tiny_corpus, tmp_path):
    from curindex.cli import main

    raw = tiny_config(tiny_corpus)
    plan = plan_build(config_from_dict(raw), rate=1000.0, slots=4)
    # 300 items x 50 queries at 1,000 pairs/s: 15 s, however many slots share it
    assert plan.score_seconds == pytest.approx(15.0) and plan.source == "rate"
    conf = tmp_path / "c.toml"
    conf.write_text(to_toml(raw))
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "--conf", str(conf), "--rate", "1000", "-o", "json"]) == 0
    doc = json.loads(out.getvalue())
    assert doc["pairs"]["total"] == 15_000 and doc["items"] == 300


def test_counting_and_sampling_the_inputs_without_spark(tiny_corpus):
    cfg = config_from_dict(tiny_config(tiny_corpus))
    assert count_rows(cfg.items, role="items") == 300
    assert count_rows(cfg.queries, role="queries") == 120
    # JSON lines: spread over the first JSONL_SCAN x 5 = 100 lines
    texts = sample_texts(cfg.items, role="items", n=5)
    assert texts == [tiny_corpus["items"][i][1] for i in (0, 25, 50, 74, 99)]
    assert len(sample_texts(cfg.items, role="items", n=500)) == 300  # all there are


def test_sampling_a_parquet_source_spreads_over_its_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [f"d{i}" for i in range(1000)],
                             "text": [f"text {i}" for i in range(1000)]}),
                   tmp_path / "items.parquet", row_group_size=100)
    cfg = config_from_dict({"items": {"path": str(tmp_path / "items.parquet"),
                                      "id_column": "id", "text_columns": ["text"]},
                            "queries": {"path": str(tmp_path / "items.parquet"),
                                        "id_column": "id", "text_columns": ["text"]},
                            "store": {"uri": str(tmp_path / "store")}})
    assert sample_texts(cfg.items, role="items", n=4) == ["text 0", "text 333", "text 666",
                                                           "text 999"]
