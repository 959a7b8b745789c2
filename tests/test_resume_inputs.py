"""A resumed build reuses only what the same inputs produced: a stage completed, or a score
chunk committed, with another scorer (its weights or code changed) or from other input files is
done again, never mixed into the version."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curindex.config import config_from_dict
from curindex.errors import CurIndexError
from curindex.pipeline import run_build, run_stage
from curindex.pipeline.chunks import STAMP_KEY, committed_chunks, open_dir
from curindex.scoring.base import fingerprint_for
from curindex.search import Searcher
from curindex.search.reader import read_id_map
from curindex.store import Store
from support import (
    read_version_vectors,
    save_bert_classifier,
    tiny_config,
    write_corpus,
    write_jsonl,
)

pytestmark = pytest.mark.spark


def _died_while_scoring(spark, cfg, version: str) -> Path:
    """prepare and score ran, then the driver died before the score stage's state was saved:
    its chunks are committed, the stage is not complete. Returns the build state folder."""
    for stage in ("prepare", "score"):
        run_stage(spark, cfg, version=version, stage=stage)
    state = Path(Store.open(cfg.store.uri).build_state_dir(version))
    (state / "score.json").unlink()
    return state


def test_a_resume_after_the_scorer_changed_scores_everything_with_the_new_one(
        spark, tiny_corpus, tmp_path, caplog):
    model = save_bert_classifier(tmp_path / "model", hidden=32, layers=2, heads=2, ffn=64)
    scorer = {"kind": "cross-encoder", "path": str(model), "max_item_tokens": 32,
              "options": {}}
    cfg = config_from_dict(tiny_config(tiny_corpus, scorer=scorer))
    _died_while_scoring(spark, cfg, "r")
    old = fingerprint_for(cfg.scorer)
    save_bert_classifier(model, hidden=32, layers=2, heads=2, ffn=64, seed=1)  # "fixed"
    new = fingerprint_for(cfg.scorer)
    assert new != old

    with caplog.at_level(logging.INFO, logger="curindex.pipeline"):
        manifest = run_build(spark, cfg, version="r", publish=True).manifest
    assert "stage prepare: an earlier attempt ran with another scorer" in caplog.text
    assert manifest.scorer.fingerprint == new
    assert manifest.counts.pairs_scored_this_run == manifest.counts.pairs_scored
    # The version opens with the scorer it names and answers (on main: a fingerprint mismatch).
    assert Searcher.open(cfg.store.uri).search(["river data"], k=3, budget=30)[0].ids
    # Item for item the vectors of a build that only ever saw the new weights.
    clean = config_from_dict(tiny_config(tiny_corpus, scorer=scorer, store=tmp_path / "clean"))
    run_build(spark, clean, version="r")
    ids_a, vec_a = read_version_vectors(Store.open(cfg.store.uri), "r")
    ids_b, vec_b = read_version_vectors(Store.open(clean.store.uri), "r")
    assert ids_a == ids_b
    np.testing.assert_array_equal(vec_a, vec_b)


def test_a_resume_after_the_corpus_changed_holds_only_the_new_items(spark, tmp_path, caplog):
    items = [(f"doc{i:03d}", f"river data item number {i} of the first corpus")
             for i in range(120)]
    queries = [(f"q{i:03d}", f"query {i} about rivers") for i in range(70)]
    corpus = write_corpus(tmp_path, items, queries)
    cfg = config_from_dict(tiny_config(corpus))
    _died_while_scoring(spark, cfg, "r")
    changed = [(i, t.replace("first", "second")) for i, t in items]
    write_jsonl(corpus["items_path"], [{"_id": i, "title": "", "text": t} for i, t in changed])

    with caplog.at_level(logging.INFO, logger="curindex.pipeline"):
        manifest = run_build(spark, cfg, version="r").manifest
    assert "an earlier attempt ran with another items" in caplog.text
    assert manifest.counts.pairs_scored_this_run == manifest.counts.pairs_scored
    store = Store.open(cfg.store.uri)
    texts = []
    for shard in manifest.index.shards:
        texts += read_id_map(store.local_path("r", shard.ids)).column("text").to_pylist()
    assert sorted(texts) == sorted(t for _, t in changed)


def test_a_chunk_scored_with_other_inputs_is_scored_again_or_refused(spark, tiny_corpus):
    cfg = config_from_dict(tiny_config(tiny_corpus))
    for stage in ("prepare", "score"):
        run_stage(spark, cfg, version="r", stage=stage)
    store = Store.open(cfg.store.uri)
    fs, root = open_dir(f"{store.root}/_work/r/scores")
    path = min(committed_chunks(fs, root).items())[1]
    table = pq.read_table(path)  # a late task of another build left this chunk behind
    meta = {STAMP_KEY: b'{"items": "other", "queries": "other", "scorer": "sha256:other"}'}
    pq.write_table(pa.Table.from_batches(table.to_batches(), table.schema.with_metadata(meta)),
                   path)
    with pytest.raises(CurIndexError, match=r"1 score chunks .* another items and queries "
                                            r"and scorer \(chunk chunk-0000"):
        run_stage(spark, cfg, version="r", stage="factorize")
    # The score stage run again scores that chunk again, and the build goes on.
    state = run_stage(spark, cfg, version="r", stage="score")
    assert state["pairs_scored_this_run"] == state["pairs_scored"]  # run_stage starts over
    assert run_stage(spark, cfg, version="r", stage="factorize")["effective_rank"] > 0


def test_a_stale_chunk_left_in_a_resumed_score_stage_is_scored_again(spark, tiny_corpus):
    cfg = config_from_dict(tiny_config(tiny_corpus))
    state = _died_while_scoring(spark, cfg, "r")
    store = Store.open(cfg.store.uri)
    fs, root = open_dir(f"{store.root}/_work/r/scores")
    path = min(committed_chunks(fs, root).items())[1]
    rows = pq.read_table(path).num_rows
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({}), path)  # says nothing of its inputs
    manifest = run_build(spark, cfg, version="r").manifest
    assert manifest.counts.pairs_scored_this_run == rows * 50
    assert not list(state.glob("score*.json"))  # committed: the stage states are gone
