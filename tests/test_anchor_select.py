"""Anchor item strategies: the pure selections on generated matrices, and the builds that use
them against an independent numpy choice from the exact score matrix."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.linalg

from curindex.config import ScorerConfig, config_from_dict
from curindex.kinds.anchor_select import (
    kmeans_rows,
    leverage_projector,
    leverage_scores,
    pivoted_qr_columns,
)
from curindex.pipeline import run_build
from curindex.pipeline.leverage import POOL_FACTOR
from curindex.scoring.base import build_scorer
from support import tiny_config


def clustered(seed: int, n: int = 400, d: int = 16, k: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    x = centres[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("k", [1, 5, 8, 30])
def test_kmeans_rows_distinct_valid_deterministic(k):
    x = clustered(0)
    a, b = kmeans_rows(x, k, seed=3), kmeans_rows(x, k, seed=3)
    assert a.tolist() == b.tolist()
    assert len(set(a.tolist())) == k and all(0 <= j < len(x) for j in a.tolist())


def test_kmeans_rows_cover_every_cluster():
    rng = np.random.default_rng(1)
    centres = np.eye(6, 16) * 10
    labels = rng.integers(0, 6, size=300)
    x = centres[labels] + rng.normal(size=(300, 16)) * 0.1
    chosen = kmeans_rows(x / np.linalg.norm(x, axis=1, keepdims=True), 6, seed=0)
    assert sorted(labels[chosen].tolist()) == list(range(6))


def test_kmeans_rows_rejects_more_anchors_than_items():
    with pytest.raises(ValueError, match="k = 5 anchors from 3 embedded items"):
        kmeans_rows(clustered(0, n=3), 5, seed=0)


def test_leverage_scores_equal_the_hat_matrix_diagonal():
    """Full-rank leverage of column j of H is the diagonal of H^T (H H^T)^-1 H."""
    rng = np.random.default_rng(2)
    h = rng.normal(size=(12, 200))
    proj = leverage_projector(h @ h.T, rank=12)
    want = np.einsum("ij,ij->j", h, np.linalg.solve(h @ h.T, h))
    np.testing.assert_allclose(leverage_scores(proj, h.T), want, rtol=1e-8)
    assert leverage_projector(h @ h.T, rank=4).shape == (4, 12)


def test_pivoted_qr_columns_prefers_independent_columns():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(20, 4))
    pool = np.hstack([base, base[:, :2] * 1.001, rng.normal(size=(20, 1)) * 1e-3])
    chosen = pivoted_qr_columns(pool, 4)
    assert len(set(chosen.tolist())) == 4
    assert np.linalg.matrix_rank(pool[:, chosen]) == 4
    with pytest.raises(ValueError, match="k = 9 anchors from a pool of 7 items"):
        pivoted_qr_columns(pool, 9)


@pytest.mark.spark
@pytest.mark.parametrize("strategy", ["kmeans", "leverage"])
def test_build_with_anchor_strategy(spark, tiny_corpus, strategy):
    raw = tiny_config(tiny_corpus, scorer={"kind": "toy", "options": {"dim": "16"}},
                      anchors={"items": strategy})
    cfg = config_from_dict(raw)
    result = run_build(spark, cfg, version=f"a-{strategy}")
    m = result.manifest.to_dict()
    assert m["anchors"]["strategy"] == strategy
    store_path = cfg.store.uri
    anchors = pq.read_table(f"{store_path}/versions/a-{strategy}/anchors/items.parquet")
    ids = anchors.column("id").to_pylist()
    item_ids = [i for i, _ in tiny_corpus["items"]]
    assert len(ids) == len(set(ids)) == cfg.anchors.n_items
    assert set(ids) <= set(item_ids)
    if strategy == "leverage":
        # Independent: leverage + pivoted QR over the exact matrix, computed here in numpy.
        queries = pq.read_table(f"{store_path}/versions/a-{strategy}/anchors/queries.parquet")
        anchor_q = [t for t, r in zip(queries.column("text").to_pylist(),
                                      queries.column("role").to_pylist(), strict=True)
                    if r == "anchor"]
        texts = dict(tiny_corpus["items"])
        scorer = build_scorer(ScorerConfig(**cfg.to_dict()["scorer"]))
        h = scorer.score_block(anchor_q, [texts[i] for i in item_ids]).astype(np.float64)
        evals, evecs = np.linalg.eigh(h @ h.T)
        top = np.argsort(evals)[::-1][: cfg.anchors.n_items]
        lev = ((evecs[:, top].T @ h) ** 2 / evals[top][:, None]).sum(0)  # [n]
        pool = sorted(range(len(item_ids)), key=lambda j: (-lev[j], item_ids[j]))
        pool = pool[: POOL_FACTOR * cfg.anchors.n_items]
        piv = scipy.linalg.qr(h[:, pool], pivoting=True)[2][: cfg.anchors.n_items]
        assert ids == [item_ids[pool[j]] for j in piv]
        assert m["factorization"]["anchor_selection_s"] >= 0
    again = run_build(spark, config_from_dict({**raw, "store": {"uri": store_path + "-2"}}),
                      version=f"a-{strategy}")
    again_ids = pq.read_table(
        f"{store_path}-2/versions/a-{strategy}/anchors/items.parquet").column("id").to_pylist()
    assert again_ids == ids
    index_files = {p: f for p, f in m["files"].items() if not p.startswith("report/")}
    assert index_files == {p: f for p, f in again.manifest.to_dict()["files"].items()
                           if not p.startswith("report/")}  # the report holds timings


def test_synthetic_query_is_the_first_sentence_cut_short():
    from curindex.pipeline.anchors import synthetic_query

    assert synthetic_query("Sea ice is melting. Fast!") == "Sea ice is melting."
    assert synthetic_query("  one   two\nthree  ") == "one two three"
    assert synthetic_query(" ".join(map(str, range(40))), 5) == "0 1 2 3 4"


@pytest.mark.spark
def test_build_with_synthetic_anchor_queries(spark, tiny_corpus, tmp_path):
    """A query log of 30 is too small for k_q = 40 + 10 tests; 20 synthetic anchors fill it."""
    from curindex.errors import InputError
    from curindex.pipeline.anchors import synthetic_query
    from support import write_jsonl

    small = write_jsonl(tmp_path / "few.jsonl", [{"_id": i, "text": t}
                                                 for i, t in tiny_corpus["queries"][:30]])
    raw = tiny_config(tiny_corpus, queries={"path": str(small)},
                      anchors={"n_queries": 40, "n_items": 12, "n_test": 10})
    with pytest.raises(InputError, match="30 queries, fewer than k_q"):
        run_build(spark, config_from_dict(raw), version="s0")
    raw["anchors"]["synthetic_queries"] = 20
    cfg = config_from_dict(raw)
    run_build(spark, cfg, version="s1")
    q = pq.read_table(f"{cfg.store.uri}/versions/s1/anchors/queries.parquet").to_pydict()
    rows = list(zip(q["id"], q["text"], q["role"], strict=True))
    synthetic = [(i, t) for i, t, r in rows if i.startswith("synthetic:")]
    texts = dict(tiny_corpus["items"])
    assert len(synthetic) == 20 and all(r == "anchor" for i, _, r in rows if i in dict(synthetic))
    assert all(t == synthetic_query(texts[i.removeprefix("synthetic:")]) for i, t in synthetic)
    real = {i for i, _ in tiny_corpus["queries"][:30]}
    assert sum(r == "anchor" for *_, r in rows) == 40
    assert {i for i, _, r in rows if r == "test"} <= real  # tests are always real queries
