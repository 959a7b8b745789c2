"""The Spark build against a single-machine numpy CUR of the same exact score matrix."""

from __future__ import annotations

import collections
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from curindex.config import ScorerConfig, config_from_dict
from curindex.pipeline import run_build
from curindex.scoring.base import build_scorer
from curindex.search import Searcher
from curindex.search.reader import read_id_map
from curindex.search.shardindex import split_labels
from curindex.store import Store
from support import make_texts, read_version_vectors, tiny_config, write_corpus, write_jsonl

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """One published build of the tiny corpus with the toy scorer, shared by this module."""
    root = tmp_path_factory.mktemp("built")
    items = make_texts(300, seed=1, prefix="doc")
    queries = make_texts(120, seed=2, prefix="q", min_words=2, max_words=5)
    corpus = write_corpus(root, items, queries)
    raw = tiny_config(corpus, scorer={"kind": "toy", "options": {"dim": "32"}},
                      validate={"budgets": [100, 200, 500]})
    cfg = config_from_dict(raw)
    result = run_build(spark, cfg, version="v1", publish=True)
    return {"cfg": cfg, "result": result, "corpus": corpus, "store": Store.open(cfg.store.uri)}


def exact_matrix(cfg, queries: list[str], items: list[str]) -> np.ndarray:
    """The scorer run directly on one machine: [len(queries), len(items)]."""
    return build_scorer(ScorerConfig(**cfg.to_dict()["scorer"])).score_block(queries, items)


def test_vectors_equal_numpy_cur_of_the_exact_matrix(built):
    cfg, store = built["cfg"], built["store"]
    ids, vectors = read_version_vectors(store, "v1")
    anchors = pq.read_table(store.local_path("v1", "anchors/items.parquet")).to_pydict()
    queries = pq.read_table(store.local_path("v1", "anchors/queries.parquet")).to_pydict()
    anchor_q = [t for t, r in zip(queries["text"], queries["role"], strict=True) if r == "anchor"]
    item_ids = [i for i, _ in built["corpus"]["items"]]
    texts = dict(built["corpus"]["items"])
    h = exact_matrix(cfg, anchor_q, [texts[i] for i in item_ids]).astype(np.float64)
    cols = [item_ids.index(a) for a in anchors["id"]]
    g = np.linalg.pinv(h[:, cols], rcond=cfg.factorize.rcond)  # [k_i, k_q]
    want = (g @ h).T  # [n, k_i]
    got = vectors[np.argsort(ids)]
    assert sorted(ids) == sorted(item_ids)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want[np.argsort(item_ids)], atol=1e-5 * max(1.0, scale))
    manifest = store.read_manifest("v1")
    assert manifest["factorization"]["effective_rank"] == len(cols)
    assert manifest["counts"]["items"] == 300
    assert manifest["anchors"]["n_queries"] == len(anchor_q) == cfg.anchors.n_queries


def test_every_item_in_exactly_one_shard_once(built):
    store = built["store"]
    manifest = store.read_manifest("v1")
    seen = collections.Counter()
    for s in manifest["index"]["shards"]:
        ids = read_id_map(store.local_path("v1", s["ids"]))
        shard_of_label, rows = split_labels(ids.column("label").to_numpy())
        assert set(shard_of_label.tolist()) == {s["shard"]}
        assert rows.tolist() == list(range(ids.num_rows))
        index = faiss.read_index(store.local_path("v1", s["index"]))
        assert index.ntotal == ids.num_rows == s["n_items"]
        seen.update(ids.column("item_id").to_pylist())
    assert set(seen) == {i for i, _ in built["corpus"]["items"]}
    assert set(seen.values()) == {1}


def test_search_equals_brute_force_then_exact_rerank(built):
    cfg, store = built["cfg"], built["store"]
    searcher = Searcher.open(cfg.store.uri)
    assert searcher.version == "v1"
    ids, vectors = read_version_vectors(store, "v1")
    texts = dict(built["corpus"]["items"])
    queries = ["river data", "piano song film", "solar wind storm"]
    k, n_cand = 5, 25
    budget = len(searcher.anchor_ids) + n_cand
    results = searcher.search(queries, k=k, budget=budget)
    for q, r in zip(queries, results, strict=True):
        c = exact_matrix(cfg, [q], searcher.anchor_texts)[0].astype(np.float64)
        approx = vectors.astype(np.float64) @ c
        order = [ids[j] for j in np.argsort(-approx, kind="stable")
                 if ids[j] not in searcher.anchor_ids][:n_cand]
        pool = list(searcher.anchor_ids) + order
        exact = exact_matrix(cfg, [q], [texts[i] for i in pool])[0]
        best = np.argsort(-exact, kind="stable")[:k]
        assert r.ids == [pool[j] for j in best]
        np.testing.assert_allclose(r.scores, exact[best], rtol=1e-6)
        assert r.model_calls == budget
        assert r.texts == [texts[i] for i in r.ids]


def test_scorer_loads_once_per_python_worker(spark, tiny_corpus, tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    raw = tiny_config(tiny_corpus, scorer={"kind": "callable", "target": "scorers:counting",
                                           "options": {"log_dir": str(log_dir)}},
                      spark={"block_items": 16, "score_partitions": 6})
    run_build(spark, config_from_dict(raw), version="counted")
    loads = collections.Counter(p.name.split("-")[1] for p in log_dir.glob("loads-*"))
    blocks = list(log_dir.glob("blocks-*"))
    assert loads and set(loads.values()) == {1}, loads  # one load per worker process
    assert len(blocks) >= 300 // 16 > len(loads)  # many blocks, few loads


def test_truncated_items_are_counted(spark, tmp_path):
    items = make_texts(80, seed=5, prefix="d")
    long_ids = {"d00003", "d00042"}
    rows = [{"_id": i, "title": "", "text": (t + " ") * (40 if i in long_ids else 1)}
            for i, t in items]
    corpus = {"items_path": write_jsonl(tmp_path / "i.jsonl", rows),
              "queries_path": write_jsonl(tmp_path / "q.jsonl", [
                  {"_id": i, "text": t} for i, t in make_texts(70, seed=6, prefix="q")]),
              "root": tmp_path}
    raw = tiny_config(corpus, scorer={"kind": "toy", "max_item_tokens": 100})
    manifest = run_build(spark, config_from_dict(raw), version="t").manifest.to_dict()
    assert manifest["counts"]["items_truncated"] == len(long_ids)


def test_cli_search_prints_top_items(built, capsys):
    from curindex.cli import main

    uri = built["cfg"].store.uri
    want = Searcher.open(uri).search(["river data"], k=3, budget=40)[0]
    assert main(["search", "--store", uri, "--k", "3", "--budget", "40", "river data"]) == 0
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert [ln[2] for ln in lines] == want.ids
    assert [float(ln[1]) for ln in lines] == pytest.approx(want.scores.tolist(), abs=1e-4)
    assert main(["search", "--store", uri, "--budget", "5", "x"]) == 2  # budget <= k_i
    assert "must exceed the 12 anchor items" in capsys.readouterr().err


def test_distributed_recall_equals_numpy_on_the_same_matrix(built):
    from curindex.quality.evaluate import recall_brute_force
    from curindex.quality.figures import figure_grid

    cfg, store = built["cfg"], built["store"]
    manifest = store.read_manifest("v1")
    recall = manifest["validation"]["recall"]
    anchors = pq.read_table(store.local_path("v1", "anchors/items.parquet")).to_pydict()
    queries = pq.read_table(store.local_path("v1", "anchors/queries.parquet")).to_pydict()
    role = queries["role"]
    anchor_q = [t for t, r in zip(queries["text"], role, strict=True) if r == "anchor"]
    # Recall is reported on the test queries after the tuning ones.
    n_tune = manifest["anchors"]["n_tune"]
    test_q = [t for t, r in zip(queries["text"], role, strict=True) if r == "test"][n_tune:]
    assert n_tune == 5 and len(test_q) == 5 == manifest["validation"]["n_test"]
    item_ids = [i for i, _ in built["corpus"]["items"]]
    texts = [t for _, t in built["corpus"]["items"]]
    h = exact_matrix(cfg, anchor_q, texts).astype(np.float64)  # [k_q, n]
    exact = exact_matrix(cfg, test_q, texts).astype(np.float64)  # [n_test, n]
    cols = [item_ids.index(a) for a in anchors["id"]]
    g = np.linalg.pinv(h[:, cols], rcond=cfg.factorize.rcond)
    approx = exact[:, cols] @ g @ h  # the CUR estimate for the test queries
    budgets = [b for b in cfg.validate.budgets if b < len(item_ids)]  # 500 > 300 items
    pairs = figure_grid(cfg.validate.ks, budgets, min_budget=len(cols))
    want = recall_brute_force(exact, approx, item_ids, anchors["id"], pairs)
    assert set(recall) == set(want) == {"1@100", "10@100", "1@200", "10@200", "100@200"}
    assert recall == pytest.approx(want, abs=1e-12)
    assert min(recall.values()) > 0.0 and manifest["validation"]["passed"] is True


def test_version_under_its_threshold_is_not_publishable(spark, tiny_corpus):
    from curindex.errors import QualityGateError
    from curindex.ops.publish import publish_version

    raw = tiny_config(tiny_corpus, validate={"ks": [10], "budgets": [20],
                                             "min_recall": {"10@20": 1.0}})
    cfg = config_from_dict(raw)
    with pytest.raises(QualityGateError, match=r"Top-10-Recall@20 = 0\.\d{4} < 1\.0000"):
        run_build(spark, cfg, version="weak", publish=True)
    store = Store.open(cfg.store.uri)
    assert store.list_versions() == ["weak"]  # kept, for inspection
    assert store.current() is None  # but not published
    assert store.read_manifest("weak")["validation"]["passed"] is False
    with pytest.raises(QualityGateError, match="Top-10-Recall@20"):
        publish_version(store, "weak")


def test_stages_run_one_by_one_equal_a_whole_build(spark, built):
    from curindex.pipeline import STAGES, run_stage

    cfg = built["cfg"]
    for stage in STAGES:
        run_stage(spark, cfg, version="staged", stage=stage)
        if stage == "score":  # a retried stage overwrites its own output
            run_stage(spark, cfg, version="staged", stage=stage)
    store = built["store"]
    ids_a, vec_a = read_version_vectors(store, "v1")
    ids_b, vec_b = read_version_vectors(store, "staged")
    assert ids_a == ids_b
    np.testing.assert_array_equal(vec_a, vec_b)
    assert (store.read_manifest("staged")["validation"]["recall"]
            == store.read_manifest("v1")["validation"]["recall"])


def test_ivf_index_validation_matches_what_the_searcher_returns(spark, tiny_corpus):
    """With an approximate index the validation figures come from the built shards: they must
    equal the recall of the Searcher's own answers; the bi-encoder baseline must equal an
    independent sentence-transformers computation."""
    from sentence_transformers import SentenceTransformer

    from curindex.quality.figures import figure_grid
    from curindex.scoring.models import default_minilm_path

    raw = tiny_config(tiny_corpus,
                      index={"factory": "IVF8,Flat", "nprobe": 2, "methods": ["cur", "bi-rerank"]},
                      validate={"ks": [1, 10], "budgets": [40, 80], "objective": "10@40"})
    cfg = config_from_dict(raw)
    manifest = run_build(spark, cfg, version="ivf", publish=True).manifest.to_dict()
    v = manifest["validation"]
    assert 0.0 < v["index_recall_vs_exact"]["40"] < 1.0  # nprobe 2 of 8 lists misses some
    store = Store.open(cfg.store.uri)
    queries = pq.read_table(store.local_path("ivf", "anchors/queries.parquet")).to_pydict()
    test_q = [t for t, r in zip(queries["text"], queries["role"], strict=True) if r == "test"]
    test_q = test_q[manifest["anchors"]["n_tune"]:]  # the reported ones
    item_ids = [i for i, _ in tiny_corpus["items"]]
    texts = [t for _, t in tiny_corpus["items"]]
    exact = exact_matrix(cfg, test_q, texts)  # [n_test, n]
    grid = figure_grid([1, 10], [40, 80], min_budget=cfg.anchors.n_items)
    pairs = [(f.k, f.budget) for f in grid]
    searcher = Searcher.open(cfg.store.uri)
    cur = next(m for m in manifest["search"]["methods"] if m["method"] == "cur")
    for k, budget in pairs:
        got = searcher.search(test_q, k=k, budget=budget, method="cur")
        want = [{item_ids[j] for j in np.argsort(-exact[t], kind="stable")[:k]}
                for t in range(len(test_q))]
        recall = np.mean([len(set(r.ids) & w) / k for r, w in zip(got, want, strict=True)])
        assert cur["recall"][f"{k}@{budget}"] == pytest.approx(recall, abs=1e-9)

    st = SentenceTransformer(str(default_minilm_path()), device="cpu")
    sim = st.encode(test_q) @ st.encode(texts).T  # [n_test, n]
    for k, budget in pairs:
        hits = []
        for t in range(len(test_q)):
            pool = np.argsort(-sim[t], kind="stable")[:budget]
            top = pool[np.argsort(-exact[t, pool], kind="stable")[:k]]
            truth = np.argsort(-exact[t], kind="stable")[:k]
            hits.append(len(set(top) & set(truth)) / k)
        assert v["baseline"]["recall"][f"{k}@{budget}"] == pytest.approx(np.mean(hits), abs=0.02)


def test_cli_report_and_live_eval_agree_with_validation(built, capsys, tmp_path):
    from curindex.cli import main

    uri, store = built["cfg"].store.uri, built["store"]
    manifest = store.read_manifest("v1")
    assert {"report/report.html", "report/report.json"} <= set(manifest["files"])
    assert main(["report", "--store", uri, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").read_bytes() == Path(
        store.local_path("v1", "report/report.html")).read_bytes()
    figure = manifest["validation"]["recall"]["10@100"]
    assert f"{figure:.4f}" in capsys.readouterr().out

    queries = pq.read_table(store.local_path("v1", "anchors/queries.parquet")).to_pydict()
    test_q = [t for t, r in zip(queries["text"], queries["role"], strict=True) if r == "test"]
    test_q = test_q[manifest["anchors"]["n_tune"]:]  # the reported ones
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(test_q))
    assert main(["eval", "--store", uri, "--queries", str(qfile), "--k", "1,10",
                 "--budgets", "100"]) == 0
    rows = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines()
            if ln.strip()[:1].isdigit()}
    # Searching the test queries live reproduces the build's own validation figures.
    assert rows["10"] == f"{figure:.4f}"
    assert rows["1"] == f"{manifest['validation']['recall']['1@100']:.4f}"
