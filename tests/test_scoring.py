"""Scorers against independent per-pair computations with the same weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from curindex.config import ScorerConfig
from curindex.errors import ScorerError
from curindex.scoring import build_scorer, checked_scores, fingerprint_for, get_scorer
from curindex.scoring.base import default_minilm_path

QUERIES = ["how to open a file", "sort a list of numbers", "x"]
ITEMS = [
    "open(file, mode) opens a file and returns a stream",
    "sorted(iterable) returns a new sorted list from the items in iterable",
    "the weather today is sunny with a light breeze " * 30,  # longer than max_item_tokens
    "Zürich café naïve — emoji 🙂 and CJK 漢字",
]


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel, AutoTokenizer

    path = default_minilm_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def _token_embeddings(tok, model, text: str, max_len: int) -> torch.Tensor:
    enc = tok(text, truncation=True, max_length=max_len, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state[0]
    ids = enc["input_ids"][0]
    keep = (ids != tok.cls_token_id) & (ids != tok.sep_token_id)
    return torch.nn.functional.normalize(h[keep], dim=-1)


def test_maxsim_equals_per_pair_definition(minilm):
    tok, model = minilm
    cfg = ScorerConfig(kind="maxsim-minilm", max_query_tokens=16, max_item_tokens=24,
                       batch_size=2)
    got = build_scorer(cfg).score_block(QUERIES, ITEMS)
    want = np.zeros((len(QUERIES), len(ITEMS)))
    for a, q in enumerate(QUERIES):
        qe = _token_embeddings(tok, model, q, 16)
        for b, it in enumerate(ITEMS):
            ie = _token_embeddings(tok, model, it, 24)
            want[a, b] = (qe @ ie.T).max(dim=1).values.mean().item()
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_maxsim_reports_truncation():
    s = build_scorer(ScorerConfig(kind="maxsim-minilm", max_item_tokens=24))
    assert s.truncated(ITEMS, role="item").tolist() == [False, False, True, False]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A 2-layer random BertForSequenceClassification with the MiniLM (BERT uncased) tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp_path_factory.mktemp("ce")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).eval().save_pretrained(d)
    src = default_minilm_path()
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    return d


def test_cross_encoder_equals_direct_model_calls(tiny_cross_encoder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = ScorerConfig(kind="cross-encoder", path=str(tiny_cross_encoder), max_query_tokens=16,
                       max_item_tokens=48, batch_size=3)
    scorer = build_scorer(cfg)
    got = scorer.score_block(QUERIES, ITEMS)
    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    for a, q in enumerate(QUERIES):
        for b, it in enumerate(ITEMS):
            enc = tok(q, it, truncation="only_second", max_length=64, return_tensors="pt")
            ids, types = scorer.pair_inputs(tok(q, add_special_tokens=False)["input_ids"],
                                            tok(it, add_special_tokens=False)["input_ids"])
            assert ids == enc["input_ids"][0].tolist()
            assert types == enc["token_type_ids"][0].tolist()
            with torch.no_grad():
                want = model(**enc).logits[0, 0].item()
            assert got[a, b] == pytest.approx(want, abs=1e-5)


def test_cross_encoder_bad_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ScorerError, match=str(tmp_path)):
        build_scorer(ScorerConfig(kind="cross-encoder", path=str(tmp_path)))
    with pytest.raises(ScorerError, match="model directory not found"):
        fingerprint_for(ScorerConfig(kind="cross-encoder", path=str(tmp_path / "none")))


def test_fingerprint_follows_content_not_location(tiny_cross_encoder, tmp_path):
    copy = shutil.copytree(tiny_cross_encoder, tmp_path / "copy")
    a = ScorerConfig(kind="cross-encoder", path=str(tiny_cross_encoder))
    b = ScorerConfig(kind="cross-encoder", path=str(copy))
    assert fingerprint_for(a) == fingerprint_for(b)
    assert fingerprint_for(a) != fingerprint_for(ScorerConfig(**{**a.__dict__,
                                                                 "max_item_tokens": 64}))
    (copy / "vocab.txt").write_text("changed")
    assert fingerprint_for(a) != fingerprint_for(b)


def test_toy_scorer_is_deterministic_and_cached():
    cfg = ScorerConfig(kind="toy", options={"dim": "8"})
    fp = fingerprint_for(cfg)
    s1 = get_scorer(cfg, fp)
    assert get_scorer(cfg, fp) is s1
    fresh = build_scorer(cfg)
    np.testing.assert_array_equal(s1.score_block(QUERIES, ITEMS), fresh.score_block(QUERIES, ITEMS))


def test_callable_target_errors():
    with pytest.raises(ScorerError, match="cannot import"):
        build_scorer(ScorerConfig(kind="callable", target="no_such_module:make"))
    with pytest.raises(ScorerError, match="raised TypeError"):
        build_scorer(ScorerConfig(kind="callable", target="builtins:dict"))
    with pytest.raises(ScorerError, match="no score_block"):
        build_scorer(ScorerConfig(kind="callable", target="scorers:not_a_scorer"))


@pytest.mark.parametrize(
    ("scores", "fragment"),
    [
        (np.ones((2, 2)), r"shape \(2, 2\) for block 7, expected \(2, 3\)"),
        (np.array([[1, 2, np.nan], [0, 0, 0]]), "1 non-finite scores"),
        ([["a", "b", "c"], [1, 2, 3]], "non-numeric"),
    ],
)
def test_checked_scores_rejects_bad_output(scores, fragment):
    with pytest.raises(ScorerError, match=fragment):
        checked_scores(scores, 2, 3, where="block 7")
