"""Adaptive multi-round search: the pure rounds on generated matrices, and the Searcher over a
version built with `[index] adaptive = true`."""

from __future__ import annotations

import numpy as np
import pytest

from curindex.config import ScorerConfig, config_from_dict
from curindex.kinds.cur import solve_g
from curindex.pipeline import run_build
from curindex.scoring.base import build_scorer
from curindex.search import Searcher
from curindex.search.methods import (
    Plan,
    SearchSpec,
    deeper_asks,
    query_weights,
    round_sizes,
    run_plans,
)
from support import make_texts, tiny_config, write_corpus


@pytest.mark.parametrize("n", range(0, 13))
@pytest.mark.parametrize("rounds", [1, 2, 3, 5])
def test_round_sizes_split_every_retrieval(n, rounds):
    sizes = round_sizes(n, rounds)
    assert len(sizes) == rounds and sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_round_sizes_rejects_no_round():
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        round_sizes(10, 0)


def test_first_round_weights_are_plain_cur():
    """Solved on the anchor items alone, the query's weights give plain CUR's estimate c.G h."""
    rng = np.random.default_rng(0)
    h = rng.normal(size=(30, 400))  # [k_q, n]
    anchors = rng.choice(400, 8, replace=False)
    c = rng.normal(size=8)
    g = solve_g(h[:, anchors], rcond=1e-9).g  # [k_i, k_q]
    w = query_weights(h[:, anchors], c, rcond=1e-9)
    np.testing.assert_allclose(w @ h, c @ g @ h, atol=1e-8)


def low_rank_scores(seed: int, *, n_q: int, n: int, rank: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n_q, rank)) @ rng.normal(size=(rank, n))
            + noise * rng.normal(size=(n_q, n)))


class MatrixRetriever:
    """The methods' retriever over whole matrices: e = (G H)^T item vectors, H the anchor-query
    scores, `tests` the test queries' exact scores (a brute-force stand-in for the shards)."""

    def __init__(self, h: np.ndarray, g: np.ndarray, tests: np.ndarray) -> None:
        self.h, self.e, self.tests = h, (g @ h).T, tests

    def retrieve(self, asks):
        out = []
        for a in asks:
            est = (self.e if a.space == "e" else self.h.T) @ a.vector
            keys = [int(j) for j in np.argsort(-est, kind="stable") if int(j) not in a.seen]
            keys = keys[: a.n]
            out.append((keys, self.tests[a.query, keys]))
        return out

    def columns(self, keys):
        return {k: self.h[:, k] for k in keys}


def simulate(s: np.ndarray, k_q: int, k_i: int, *, budget: int, rounds: int, k: int,
             seed: int = 1) -> float:
    """Top-k-Recall@budget of adaptive search with exact retrieval over a whole matrix: rows
    [:k_q] are anchor queries (H), the rest test queries."""
    h, tests = s[:k_q], s[k_q:]
    anchors = np.random.default_rng(seed).choice(s.shape[1], k_i, replace=False)
    g = solve_g(h[:, anchors], rcond=1e-6).g
    c = tests[:, anchors]  # [n_t, k_i]
    n_retrieve = budget - k_i
    spec = SearchSpec("cur") if rounds == 1 else SearchSpec("adaptive", rounds)
    sizes = spec.sizes(budget, k_i=k_i, n_items=s.shape[1], n_anchors_listed=k_i)
    plans = [Plan(qi, spec, budget, sizes, c[qi], c[qi], frozenset(anchors.tolist()))
             for qi in range(len(tests))]
    run_plans(plans, MatrixRetriever(h, g, tests), anchor_columns=h[:, anchors], rcond=1e-6)
    recall = 0.0
    for qi, p in enumerate(plans):
        keys, exact = p.keys, np.array(p.exact)
        assert len(keys) == len(set(keys)) == n_retrieve  # the budget, no item twice
        assert not set(keys) & set(anchors.tolist())
        np.testing.assert_array_equal(exact, tests[qi, keys])
        pool = np.concatenate([anchors, keys])
        got = set(pool[np.argsort(-tests[qi, pool], kind="stable")[:k]].tolist())
        want = set(np.argsort(-tests[qi], kind="stable")[:k].tolist())
        recall += len(got & want) / k
    return recall / len(tests)


def test_one_round_returns_round_one_unchanged():
    s = low_rank_scores(3, n_q=60, n=300, rank=6, noise=0.3)

    class OneRound(MatrixRetriever):
        def columns(self, keys):
            pytest.fail("no second round")

    plan = Plan(0, SearchSpec("cur"), 5, [2], s[40, :3], s[40, :3], frozenset([0, 1, 2]))
    run_plans([plan], OneRound(s[:40], np.eye(3, 40), s[40:41]), anchor_columns=s[:40, :3],
              rcond=1e-6)
    want = [int(j) for j in np.argsort(-(np.eye(3, 40) @ s[:40]).T @ s[40, :3], kind="stable")
            if j > 2][:2]
    assert plan.keys == want and plan.exact == s[40, want].tolist()


@pytest.mark.parametrize("spec", [SearchSpec("cur"), SearchSpec("adaptive", 2),
                                  SearchSpec("adaptive", 3)])
def test_deeper_asks_read_each_ranking_one_round_further(spec):
    """A pool's deeper candidates: after a plan ran, its next n items are what one more round
    of it would retrieve (plain CUR: its ranking read further), leaving out what it scored."""
    s = low_rank_scores(5, n_q=70, n=300, rank=6, noise=0.3)
    h, tests, anchors = s[:40], s[40:], np.arange(6)
    retriever = MatrixRetriever(h, solve_g(h[:, anchors], rcond=1e-6).g, tests)
    sizes = spec.sizes(60, k_i=6, n_items=300, n_anchors_listed=6)
    ran, longer = ([Plan(q, spec, 60, sz, tests[q, anchors], tests[q, anchors],
                         frozenset(anchors.tolist())) for q in range(5)]
                   for sz in (sizes, [*sizes[:-1], sizes[-1] + 30] if len(sizes) == 1
                              else [*sizes, 30]))
    for plans in (ran, longer):
        run_plans(plans, retriever, anchor_columns=h[:, anchors], rcond=1e-6)
    asks = deeper_asks(ran, 30, retriever, anchor_columns=h[:, anchors], rcond=1e-6)
    for a, (keys, _), want in zip(asks, retriever.retrieve(asks), longer, strict=True):
        assert not set(keys) & set(ran[a.query].keys) and len(keys) == 30
        assert ran[a.query].keys + keys == want.keys


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_more_rounds_recall_at_least_one_round(seed):
    """Low rank plus noise: re-solving on the items scored so far never loses recall at the
    same budget, and here gains."""
    s = low_rank_scores(seed, n_q=140, n=1500, rank=20, noise=0.6)
    one = simulate(s, 100, 20, budget=80, rounds=1, k=10, seed=seed)
    three = simulate(s, 100, 20, budget=80, rounds=3, k=10, seed=seed)
    assert three >= one
    assert three > one + 0.02, (one, three)


@pytest.mark.spark
def test_searcher_adaptive_rounds(spark, tmp_path):
    items = make_texts(300, seed=1, prefix="doc")
    queries = make_texts(120, seed=2, prefix="q", min_words=2, max_words=5)
    corpus = write_corpus(tmp_path, items, queries)
    raw = tiny_config(corpus, scorer={"kind": "toy", "options": {"dim": "32"}},
                      index={"num_shards": 3,
                             "methods": ["cur", "adaptive", "bi-seeded", "bi-rerank"]})
    cfg = config_from_dict(raw)
    result = run_build(spark, cfg, version="a1", publish=True)
    assert result.manifest.index.extra_bytes["x"] > 0  # the extra index: h and bi
    searcher = Searcher.open(cfg.store.uri)
    assert searcher.adaptive
    qs = ["river data", "piano song film", "solar wind storm", "quiet harbour lights"]
    k_i, budget, k = len(searcher.anchor_ids), len(searcher.anchor_ids) + 30, 10
    plain = searcher.search(qs, k=k, budget=budget, method="cur")
    one = searcher.search(qs, k=k, budget=budget, rounds=1)
    three = searcher.search(qs, k=k, budget=budget, rounds=3)
    scorer = build_scorer(ScorerConfig(**cfg.to_dict()["scorer"]))
    texts = dict(items)
    ids = [i for i, _ in items]
    exact = scorer.score_block(qs, [texts[i] for i in ids])  # [n_q, n]
    for qi, (p, o, t) in enumerate(zip(plain, one, three, strict=True)):
        assert p.ids == o.ids and np.array_equal(p.scores, o.scores)
        assert t.model_calls == budget == p.model_calls
        # Every returned score is the item's exact score, best first.
        want = {i: exact[qi, j] for j, i in enumerate(ids)}
        np.testing.assert_allclose(t.scores, [want[i] for i in t.ids], rtol=1e-5, atol=1e-6)
        assert list(t.scores) == sorted(t.scores, reverse=True)
        assert t.texts == [texts[i] for i in t.ids]
    top = [set(np.array(ids)[np.argsort(-exact[qi], kind="stable")[:k]]) for qi in range(len(qs))]
    recall = {name: np.mean([len(set(r.ids) & top[qi]) / k for qi, r in enumerate(res)])
              for name, res in (("one", one), ("three", three))}
    assert recall["three"] >= recall["one"], recall
    assert k_i < budget
    # Bi-encoder seeding, one round, the whole budget: bi-encoder retrieve-and-rerank.
    from curindex.scoring.biencoder import get_biencoder

    sim = get_biencoder().encode(qs) @ get_biencoder().encode([texts[i] for i in ids]).T
    bi = searcher.search(qs, k=k, budget=budget, seed="bi-encoder", seed_size=budget)
    bi3 = searcher.search(qs, k=k, budget=budget, rounds=3, seed="bi-encoder", seed_size=10)
    for qi, (r, r3) in enumerate(zip(bi, bi3, strict=True)):
        pool = np.argsort(-sim[qi], kind="stable")[:budget]
        best = pool[np.argsort(-exact[qi, pool], kind="stable")[:k]]
        assert r.ids == [ids[j] for j in best] and r.model_calls == budget
        assert r3.model_calls == budget
        want = {i: exact[qi, j] for j, i in enumerate(ids)}
        np.testing.assert_allclose(r3.scores, [want[i] for i in r3.ids], rtol=1e-5, atol=1e-6)
    plain_only = config_from_dict({**raw, "index": {"num_shards": 3, "methods": ["cur"]},
                                   "store": {"uri": str(tmp_path / "plain")}})
    run_build(spark, plain_only, version="p1", publish=True)
    with pytest.raises(ValueError, match="adaptive = true"):
        Searcher.open(plain_only.store.uri).search(qs, k=k, budget=budget, rounds=2)
