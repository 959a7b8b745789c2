"""Native `score_pairs` of the cross-encoder and MaxSim scorers: aligned pairs of many queries
score as the same pairs in `score_block`, each distinct text is encoded once, and a long-running
reader's MaxSim query cache stays bounded. A tiny random BERT classifier and the packaged
MiniLM; no Spark."""

from __future__ import annotations

import numpy as np
import pytest

from curindex.config import ScorerConfig
from curindex.scoring import maxsim
from curindex.scoring.base import build_scorer, score_pairs
from support import make_texts, save_bert_classifier

QUERIES = [t for _, t in make_texts(5, seed=3, prefix="q", min_words=2, max_words=6)]
ITEMS = [t for _, t in make_texts(12, seed=4, prefix="d", min_words=3, max_words=40)]


@pytest.fixture(scope="module")
def scorers(tmp_path_factory) -> dict:
    model = save_bert_classifier(tmp_path_factory.mktemp("ce"), hidden=32, layers=2, heads=2,
                                 ffn=64)
    return {
        "cross-encoder": build_scorer(ScorerConfig(kind="cross-encoder", path=str(model),
                                                   batch_size=4, max_query_tokens=8,
                                                   max_item_tokens=24)),
        "maxsim-minilm": build_scorer(ScorerConfig(kind="maxsim-minilm", batch_size=4,
                                                   max_item_tokens=24)),
    }


@pytest.mark.parametrize("kind", ["cross-encoder", "maxsim-minilm"])
def test_pairs_of_many_queries_score_as_in_a_block(scorers, kind):
    scorer = scorers[kind]
    block = scorer.score_block(QUERIES, ITEMS)  # [5, 12]
    rng = np.random.default_rng(0)
    qi, ii = rng.integers(len(QUERIES), size=60), rng.integers(len(ITEMS), size=60)
    got = scorer.score_pairs([QUERIES[a] for a in qi], [ITEMS[b] for b in ii])
    assert got.dtype == np.float32 and got.shape == (60,)
    # other batch companions change float rounding only
    np.testing.assert_allclose(got, block[qi, ii], rtol=0, atol=1e-5)
    # and through curindex.scoring.base.score_pairs, which checks and uses the native one
    np.testing.assert_array_equal(
        score_pairs(scorer, [QUERIES[a] for a in qi], [ITEMS[b] for b in ii], where="test"), got)
    with pytest.raises(ValueError, match="do not pair up"):
        scorer.score_pairs(QUERIES[:2], ITEMS[:3])
    assert scorer.score_pairs([], []).shape == (0,)


def test_maxsim_encodes_each_distinct_item_once(scorers, monkeypatch):
    scorer = scorers["maxsim-minilm"]
    encoded = []
    real = scorer.encode

    def encode(texts, max_len):
        if max_len == scorer.cfg.max_item_tokens:
            encoded.extend(texts)
        return real(texts, max_len)

    monkeypatch.setattr(scorer, "encode", encode)
    pairs = [(q, i) for q in QUERIES for i in ITEMS[:4]]  # every query retrieved the same items
    scorer.score_pairs([q for q, _ in pairs], [i for _, i in pairs])
    assert sorted(encoded) == sorted(ITEMS[:4])


def test_maxsim_keeps_a_bounded_number_of_queries_besides_those_it_was_given(scorers,
                                                                           monkeypatch):
    scorer = scorers["maxsim-minilm"]
    monkeypatch.setattr(maxsim, "QUERY_CACHE_SIZE", 3)
    given = ["given query one", "given query two"]
    scorer.load_queries(given, scorer.prepare_queries(given))
    many = [t for _, t in make_texts(10, seed=9, prefix="x", min_words=2, max_words=4)]
    want = scorer.score_block(many + given, ITEMS[:2])
    assert len(scorer._recent) == 3 and set(given) <= set(scorer._query_cache)
    np.testing.assert_allclose(scorer.score_block(many + given, ITEMS[:2]), want, atol=1e-6)
