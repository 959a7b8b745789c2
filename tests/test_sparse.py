"""The sparse build kind end to end in Spark: its pairs and fit against a single-process
computation, a killed build resuming to the same files, an incremental build that makes no
index pair, and the Searcher over the version."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curindex.config import config_from_dict
from curindex.kinds.latent import LatentMaps, fit_maps
from curindex.kinds.sparse import MAPS_FILE
from curindex.pipeline import run_build, run_stage
from curindex.pipeline.chunks import committed_chunks, open_dir
from curindex.scoring.base import build_scorer
from curindex.scoring.biencoder import get_biencoder
from curindex.search import Searcher
from curindex.store import Store
from scorers import recorded_pairs
from support import make_texts, read_version_vectors, tiny_config, write_corpus

pytestmark = pytest.mark.spark

FIT = {"hidden": 16, "epochs": 8, "patience": 3, "batch_size": 128}


def sparse_config(corpus: dict, **sparse) -> dict:
    return tiny_config(
        corpus, index={"kind": "sparse", "num_shards": 3, "methods": ["bi-rerank", "bi-seeded"]},
        sparse={"neighbours": 6, "random_items": 2, "synthetic_queries": 40, **FIT, **sparse},
        validate={"ks": [1, 10], "budgets": [25, 60], "rounds": [2], "seed_sizes": [10]})


def _queries(store: Store, version: str, *, role: str) -> list[str]:
    """The training ("anchor") or test queries of a version, as its prepare stage chose."""
    table = pq.read_table(io.BytesIO(store.read_bytes(version, "anchors/queries.parquet")))
    return [t for t, r in zip(table.column("text").to_pylist(), table.column("role").to_pylist(),
                              strict=True) if r == role]


def _training_queries(store: Store, version: str) -> list[str]:
    return _queries(store, version, role="anchor")


def test_the_spark_fit_equals_a_single_process_fit_of_the_same_entries(spark, tiny_corpus):
    cfg = config_from_dict(sparse_config(tiny_corpus, random_items=0))
    for stage in ("prepare", "score", "factorize"):
        run_stage(spark, cfg, version="f", stage=stage)
    store = Store.open(cfg.store.uri)
    got = LatentMaps.from_bytes(store.read_bytes("f", MAPS_FILE))

    # One process, no Spark: every item embedded, each training query's 6 nearest items by
    # brute force (ties by id), scored by the scorer itself, fitted with the same seed.
    train = _training_queries(store, "f")
    ids = [i for i, _ in tiny_corpus["items"]]
    texts = [t for _, t in tiny_corpus["items"]]
    i_emb, q_emb = get_biencoder().encode(texts), get_biencoder().encode(train)
    sims = q_emb @ i_emb.T
    top = [sorted(range(len(ids)), key=lambda j, q=q: (-sims[q, j], ids[j]))[:6]
           for q in range(len(train))]
    pairs = sorted((q, ids[j]) for q in range(len(train)) for j in top[q])
    row = {i: r for r, i in enumerate(ids)}
    qi = np.array([q for q, _ in pairs])
    ii = np.array([row[i] for _, i in pairs])
    s = build_scorer(cfg.scorer).score_block(train, texts)[qi, ii]
    want, _ = fit_maps(q_emb, i_emb, qi, ii, s, learning_rate=cfg.sparse.learning_rate,
                       weight_decay=cfg.sparse.weight_decay, holdout=cfg.sparse.holdout,
                       seed=cfg.sparse.seed, **FIT)
    # Stated tolerance: the embeddings come from other batches on the executors (float32
    # sums in another order), so the fitted maps agree to 1e-3, not bit for bit.
    assert got.alpha == pytest.approx(want.alpha, abs=1e-4)
    assert got.beta == pytest.approx(want.beta, rel=1e-4)
    np.testing.assert_allclose(got.item(i_emb), want.item(i_emb), atol=1e-3)
    np.testing.assert_allclose(got.query(q_emb), want.query(q_emb), atol=1e-3)


def test_a_killed_sparse_build_resumes_to_the_same_files(spark, tiny_corpus, tmp_path):
    cfg = config_from_dict(sparse_config(tiny_corpus))
    for stage in ("prepare", "score"):
        run_stage(spark, cfg, version="v", stage=stage)
    store = Store.open(cfg.store.uri)
    # The driver died while scoring pairs: the stage's state is not saved and some of its
    # pair chunks were not committed yet.
    Path(store.build_state_dir("v"), "score.json").unlink()
    fs, root = open_dir(f"{store.root}/_work/v/pairs")
    chunks = committed_chunks(fs, root)
    for path in list(chunks.values())[: len(chunks) // 2]:
        fs.delete_file(path)
    resumed = run_build(spark, cfg, version="v").manifest
    assert 0 < resumed.counts.pairs_scored_this_run < resumed.counts.pairs_scored

    clean_cfg = config_from_dict(sparse_config(tiny_corpus) | {
        "store": {"uri": str(tmp_path / "clean")}})
    clean = run_build(spark, clean_cfg, version="v").manifest

    def files(m):
        return {p: f.sha256 for p, f in m.files.items() if not p.startswith("report/")}

    assert files(resumed) == files(clean)
    assert resumed.sparse.pairs == clean.sparse.pairs > 0


def test_an_incremental_sparse_build_scores_no_pair_for_new_items(spark, tmp_path):
    items = make_texts(240, seed=5, prefix="doc")
    queries = make_texts(90, seed=6, prefix="q", min_words=2, max_words=5)
    corpus = write_corpus(tmp_path / "v1", items, queries)
    log = tmp_path / "log"
    log.mkdir()
    scorer = {"kind": "callable", "target": "scorers:recording",
              "options": {"dim": "8", "log_dir": str(log)}}
    raw = sparse_config(corpus) | {"scorer": scorer}
    raw["index"] = {**raw["index"], "keep_scores": True}
    raw["store"] = {"uri": str(tmp_path / "store")}
    run_build(spark, config_from_dict(raw), version="v1", publish=True)
    store = Store.open(raw["store"]["uri"])
    train = set(_training_queries(store, "v1"))
    assert any(q in train for q, _ in recorded_pairs(log))  # the base did score its pairs

    new = make_texts(30, seed=7, prefix="new")
    changed = [(i, t + " storm") for i, t in items[:5]]
    corpus2 = write_corpus(tmp_path / "v2", changed + items[5:] + new, queries)
    for f in log.iterdir():
        f.unlink()
    raw2 = {**raw, "items": {"path": str(corpus2["items_path"])}}
    m = run_build(spark, config_from_dict(raw2), version="v2", base="v1").manifest
    pairs = recorded_pairs(log)
    assert m.counts.index_pairs == 0 and m.sparse.pairs > 0  # the base's pairs, kept
    # Only validation scored (its pools, test queries alone, each pair once): no training
    # query, so no pair of the index, for any item, new or not.
    tests = set(_queries(store, "v2", role="test"))
    assert m.validation.ground_truth == "pooled"  # as its base: the index is that cheap
    assert pairs and {q for q, _ in pairs} <= tests
    assert len(pairs) == len(set(pairs)) == m.counts.validation_pairs
    # A new item's vector is the base's item map of its embedding: no model call made it.
    maps = LatentMaps.from_bytes(store.read_bytes("v2", MAPS_FILE))
    ids, vectors = read_version_vectors(store, "v2")
    at = {i: r for r, i in enumerate(ids)}
    want = maps.item(get_biencoder().encode([t for _, t in new]))
    np.testing.assert_allclose(vectors[[at[i] for i, _ in new]], want, atol=1e-5)


def test_a_sparse_version_serves_its_validated_search(spark, tiny_corpus):
    cfg = config_from_dict(sparse_config(tiny_corpus))
    m = run_build(spark, cfg, version="s", publish=True).manifest
    assert m.sparse.training_queries == 120 - 10 + 40  # the log's non-test queries + synthetic
    assert m.counts.index_pairs == m.sparse.pairs <= m.sparse.training_queries * (6 + 2)
    assert {r.method for r in m.search.methods} == {"bi-rerank", "bi-seeded"}
    searcher = Searcher.open(cfg.store.uri)
    for method in ("bi-rerank", "bi-seeded"):
        (res,) = searcher.search(["river data storm"], k=5, budget=40, method=method)
        assert res.model_calls == 40 and len(res.ids) == 5
        exact = build_scorer(cfg.scorer).score_block(["river data storm"], res.texts)[0]
        np.testing.assert_allclose(res.scores, exact, rtol=1e-5)  # exact scores, best first
        assert list(res.scores) == sorted(res.scores, reverse=True)
    doc = json.loads(Path(store_manifest(cfg)).read_text())
    assert doc["format"] == 4 and doc["sparse"]["fit"]["entries"] == m.sparse.pairs


def store_manifest(cfg) -> str:
    return str(Path(cfg.store.uri) / "versions" / "s" / "manifest.json")
