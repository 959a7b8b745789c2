"""A build's plan against what the build then counts and writes."""

from __future__ import annotations

import json

import pytest

from curindex.config import config_from_dict
from curindex.pipeline import run_build
from curindex.plan import count_rows, plan_build, sample_texts
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
    texts = sample_texts(cfg.items, role="items", n=5)
    assert texts == [t for _, t in tiny_corpus["items"][:5]]
