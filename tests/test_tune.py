"""Tuned inversion: rcond chosen on a tuning split of the test queries, never on the queries
whose recall is reported; the curve equals an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from curindex.config import config_from_dict
from curindex.errors import ConfigError
from curindex.pipeline import run_build
from curindex.quality.evaluate import recall_brute_force
from curindex.quality.figures import figure_grid
from support import tiny_config

pytestmark = pytest.mark.spark

GRID = [1e-15, 1e-3, 0.05, 0.3]


def test_tuned_rcond_on_a_disjoint_split(spark, tiny_corpus):
    raw = tiny_config(tiny_corpus, scorer={"kind": "callable", "target": "scorers:noisy",
                                           "options": {"dim": "12", "noise": "0.3"}},
                      anchors={"n_queries": 40, "n_items": 12, "n_test": 20, "seed": 3},
                      factorize={"tune": True, "tune_rconds": GRID, "tune_fraction": 0.5},
                      validate={"ks": [1, 5], "budgets": [30, 60]})
    cfg = config_from_dict(raw)
    m = run_build(spark, cfg, version="t1").manifest.to_dict()
    tuning = m["factorization"]["tuning"]
    queries = pq.read_table(f"{cfg.store.uri}/versions/t1/anchors/queries.parquet").to_pydict()
    test_ids = [i for i, r in zip(queries["id"], queries["role"], strict=True) if r == "test"]
    tune_ids = tuning["tune_ids"]
    # The split: 10 tuning queries, 10 reported; disjoint; together every test query.
    assert len(tune_ids) == tuning["n_tune"] == 10 == m["validation"]["n_test"]
    assert m["anchors"]["n_tune"] == 10 and m["anchors"]["n_test"] == 20
    reported = test_ids[10:]
    assert not set(tune_ids) & set(reported) and set(tune_ids) | set(reported) == set(test_ids)
    # The curve, independently: numpy CUR of the exact matrix on the tuning queries only.
    from curindex.config import ScorerConfig
    from curindex.scoring.base import build_scorer

    scorer = build_scorer(ScorerConfig(**cfg.to_dict()["scorer"]))
    items = tiny_corpus["items"]
    ids, texts = [i for i, _ in items], [t for _, t in items]
    anchor_q = [t for t, r in zip(queries["text"], queries["role"], strict=True) if r == "anchor"]
    tune_q = [t for i, t in zip(queries["id"], queries["text"], strict=True) if i in tune_ids]
    anchor_items = pq.read_table(f"{cfg.store.uri}/versions/t1/anchors/items.parquet")
    a_ids = anchor_items.column("id").to_pylist()
    cols = [ids.index(a) for a in a_ids]
    h = scorer.score_block(anchor_q, texts).astype(np.float64)  # [k_q, n]
    exact = scorer.score_block(tune_q, texts).astype(np.float64)  # [n_tune, n]
    pairs = figure_grid([1, 5], [30, 60], min_budget=len(a_ids))
    want = {}
    for rcond in GRID:
        g = np.linalg.pinv(h[:, cols], rcond=rcond)
        approx = exact[:, cols] @ g @ h
        want[repr(rcond)] = np.mean(list(
            recall_brute_force(exact, approx, ids, a_ids, pairs).values()))
    assert tuning["curve"].keys() == want.keys() and len(set(want.values())) > 1
    for key, value in want.items():
        assert tuning["curve"][key] == pytest.approx(value, abs=1e-9), key
    best = max(want.values())
    assert tuning["chosen_rcond"] == next(r for r in GRID if want[repr(r)] == best)
    assert m["factorization"]["rcond"] == tuning["chosen_rcond"]


def test_tune_needs_both_sides_of_the_split(tiny_corpus):
    raw = tiny_config(tiny_corpus, anchors={"n_test": 1}, factorize={"tune": True})
    with pytest.raises(ConfigError, match=r"\[factorize\] tune: needs test queries"):
        config_from_dict(raw)
