"""Scorers against independent per-pair computations with the same weights."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from curindex.config import ScorerConfig
from curindex.errors import ScorerError
from curindex.scoring import bert
from curindex.scoring.base import build_scorer, checked_scores, fingerprint_for, get_scorer
from curindex.scoring.models import default_minilm_path
from support import make_texts, save_bert_classifier

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


def without_lean_loading(monkeypatch) -> None:
    """Scorers built after this load their models with transformers."""
    monkeypatch.setattr(bert, "load_bert", lambda *a, **kw: None)


@pytest.mark.parametrize("loader", ["lean", "transformers"])
def test_maxsim_equals_per_pair_definition(minilm, loader, monkeypatch):
    tok, model = minilm
    cfg = ScorerConfig(kind="maxsim-minilm", max_query_tokens=16, max_item_tokens=24,
                       batch_size=2)
    if loader == "transformers":
        without_lean_loading(monkeypatch)
    scorer = build_scorer(cfg)
    assert scorer.fused  # BertTokensForward either way
    got = scorer.score_block(QUERIES, ITEMS)
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
    return save_bert_classifier(tmp_path_factory.mktemp("ce"), hidden=32, layers=2, heads=2,
                                ffn=64)


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


def test_cross_encoder_batches_equal_pair_inputs(tiny_cross_encoder):
    """Pairs assembled with numpy equal `pair_inputs`, for BERT's template and a RoBERTa-like
    one (special tokens on every side, two between the texts)."""
    cfg = ScorerConfig(kind="cross-encoder", path=str(tiny_cross_encoder), max_query_tokens=3,
                       max_item_tokens=9)
    scorer = build_scorer(cfg)
    q_tok = [[5, 6, 7, 8], [9], [10, 11]]
    i_tok = [[20], [21, 22, 23, 24, 25, 26, 27, 28, 29, 30], [31, 32, 33]]
    for template in (None, (([0], [2, 2], [2]), ([0], 0, [0, 0], 0, [0]))):
        if template is not None:
            scorer.t_ids, scorer.t_types = template
            scorer.n_special = 4
        qs, its = np.divmod(np.arange(9), 3)  # every (query, item) pair
        ids, types, mask = scorer._batch(qs, its, scorer._plan(q_tok, i_tok))
        for row, (a, b) in enumerate(zip(qs, its, strict=True)):
            want_ids, want_types = scorer.pair_inputs(q_tok[a], i_tok[b])
            n = int(mask[row].sum())
            assert ids[row, :n].tolist() == want_ids and types[row, :n].tolist() == want_types
            assert (ids[row, n:] == scorer.pad_id).all()


def test_cross_encoder_cls_only_forward_equals_model_forward(tiny_cross_encoder, monkeypatch):
    """The model read by load_bert, the model read by transformers (both run BertClsForward)
    and transformers' own forward give the same scores."""
    cfg = ScorerConfig(kind="cross-encoder", path=str(tiny_cross_encoder), batch_size=2)
    lean = build_scorer(cfg)
    assert type(lean.model) is bert.LeanBertClassifier and lean.cls_only
    want = lean.score_block(QUERIES, ITEMS)
    without_lean_loading(monkeypatch)
    scorer = build_scorer(cfg)
    assert type(scorer.model).__name__ == "BertForSequenceClassification" and scorer.cls_only
    np.testing.assert_allclose(scorer.score_block(QUERIES, ITEMS), want, atol=1e-6)
    scorer.cls_only = False
    np.testing.assert_allclose(scorer.score_block(QUERIES, ITEMS), want, atol=1e-6)


def test_load_bert_reads_only_what_it_implements(tiny_cross_encoder, tmp_path):
    """load_bert gives None (and the scorer loads the model with transformers, to the same
    scores as transformers' own forward) for settings its modules do not implement, another
    architecture, other weight files or weight names; an encoder is read from a classifier."""
    encoder = bert.load_bert(tiny_cross_encoder, classifier=False)
    assert type(encoder) is bert.LeanBert and encoder.pooler is None
    assert bert.load_bert(default_minilm_path(), classifier=True) is None  # no classifier head
    gelu_new = save_bert_classifier(tmp_path / "gelu-new", hidden=32, layers=2, heads=2, ffn=64,
                                    hidden_act="gelu_new")
    assert bert.load_bert(gelu_new, classifier=True) is None
    cfg = ScorerConfig(kind="cross-encoder", path=str(gelu_new), batch_size=2)
    scorer = build_scorer(cfg)
    assert type(scorer.model).__name__ == "BertForSequenceClassification"
    got = scorer.score_block(QUERIES, ITEMS)
    scorer.cls_only = False
    np.testing.assert_allclose(scorer.score_block(QUERIES, ITEMS), got, atol=1e-6)

    def variant(name: str, edit) -> Path:
        d = shutil.copytree(tiny_cross_encoder, tmp_path / name)
        edit(d)
        return d

    def set_config(**changes):
        def edit(d: Path) -> None:
            config = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps({**config, **changes}))
        return edit

    def rename_weight(d: Path) -> None:
        from safetensors.torch import load_file, save_file

        state = load_file(str(d / "model.safetensors"))
        state["classifier.w"] = state.pop("classifier.weight")
        save_file(state, str(d / "model.safetensors"))

    unread = [
        variant("roberta", set_config(model_type="roberta")),
        variant("relative", set_config(position_embedding_type="relative_key")),
        variant("renamed", rename_weight),
        variant("bin", lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin")),
        tmp_path / "none",
    ]
    assert [bert.load_bert(d, classifier=True) for d in unread] == [None] * len(unread)
    corrupt = variant("corrupt", lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64))
    with pytest.raises(ScorerError, match=r"model\.safetensors.*cannot read the weights"):
        build_scorer(ScorerConfig(kind="cross-encoder", path=str(corrupt)))


@pytest.fixture(scope="module")
def deeper_bert():
    """A random 3-layer, 4-head BertForSequenceClassification with 2 labels (no tokenizer)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=64, num_labels=2)
    return BertForSequenceClassification(config).eval()


def test_bert_cls_forward_equals_hf_forward(deeper_bert):
    """Fused query/key/value, the [CLS]-only last layer with folded keys and values, and the
    in-place residual sums give the model's own logits, with and without padding; the fused
    encoder gives its hidden states (at the real tokens)."""
    from curindex.scoring.bert import BertClsForward, BertTokensForward

    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 100, (5, 11), generator=g)
    types = (torch.arange(11) >= 6).long().expand(5, 11).contiguous()
    mask = torch.ones(5, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[3, 2:] = 0  # [CLS] and one token
    ids = ids * mask
    fused = BertClsForward(deeper_bert)
    tokens = BertTokensForward(deeper_bert.bert)
    with torch.inference_mode():
        for m in (mask, None):
            kw = {} if m is None else {"attention_mask": m}
            want = deeper_bert(input_ids=ids, token_type_ids=types, **kw).logits
            got = fused(ids, types, m)
            assert got.shape == (5, 2)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            hidden = deeper_bert.bert(input_ids=ids, **kw).last_hidden_state
            got = tokens(ids, m)
            real = torch.ones_like(ids, dtype=torch.bool) if m is None else m.bool()
            torch.testing.assert_close(got[real], hidden[real], atol=1e-5, rtol=0)


def test_int8_linear_float_first_row():
    """The first position of each row is the float Linear's output exactly; the others are the
    plain int8 Linear's."""
    from curindex.scoring.cross_encoder import Int8Linear

    torch.manual_seed(3)
    lin = torch.nn.Linear(64, 8)
    torch.nn.init.normal_(lin.weight, std=0.02)  # BERT's init: few weights near the channel max
    x = torch.randn(4, 6, 64)
    plain, first = Int8Linear(lin), Int8Linear(lin, float_first_row=True)
    with torch.inference_mode():
        got, int8, exact = first(x), plain(x), lin(x)
    torch.testing.assert_close(got[:, 0], exact[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[:, 1:], int8[:, 1:], atol=0, rtol=0)
    assert 0 < (int8 - exact).abs().median() < 0.01


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_cross_encoder_precision_options(tiny_cross_encoder, precision):
    """The fast paths run in their precision and stay close to fp32."""
    base = ScorerConfig(kind="cross-encoder", path=str(tiny_cross_encoder), batch_size=4)
    fast_cfg = ScorerConfig(**{**base.__dict__, "options": {"precision": precision}})
    assert fingerprint_for(fast_cfg) != fingerprint_for(base)
    fast = build_scorer(fast_cfg)
    ffn = fast.cls_forward.layers[0].up
    if precision == "bf16":
        assert ffn.weight.dtype == torch.bfloat16
    else:
        assert type(ffn).__name__ == "Int8Linear" and ffn.float_first_row
        assert type(fast.cls_forward.last.up) is torch.nn.Linear  # [CLS]-only: stays float
    items = [t for _, t in make_texts(40, seed=3, prefix="d")]
    want = build_scorer(base).score_block(QUERIES, items)
    got = fast.score_block(QUERIES, items)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert 0 < np.abs(got - want).max() < 1e-3
    with pytest.raises(ScorerError, match=r"options\.precision: 'fp8'"):
        build_scorer(ScorerConfig(**{**base.__dict__, "options": {"precision": "fp8"}}))


@pytest.fixture(scope="module")
def small_cross_encoder(tmp_path_factory):
    """A 4-layer random BertForSequenceClassification (hidden 64) with the MiniLM tokenizer:
    deep enough for int8 rounding to reach the score through several layers."""
    return save_bert_classifier(tmp_path_factory.mktemp("ce-small"), hidden=64, layers=4, heads=4,
                                ffn=256)


def test_cross_encoder_int8_keeps_the_fp32_ranking(small_cross_encoder):
    """int8 ranks each query's items as fp32 does (per-query Spearman), and computing the [CLS]
    row in float is what keeps it there: with the [CLS] row in int8 too, the ranking error (the
    per-query spread of the score error, relative to the spread of the scores) is larger."""
    from scipy.stats import spearmanr

    base = ScorerConfig(kind="cross-encoder", path=str(small_cross_encoder), batch_size=16)
    items = [t for _, t in make_texts(120, seed=5, prefix="d")]
    want = build_scorer(base).score_block(QUERIES, items)
    fast = build_scorer(ScorerConfig(**{**base.__dict__, "options": {"precision": "int8"}}))

    def ranking_error(got: np.ndarray) -> float:
        return max(float((g - w).std() / w.std()) for g, w in zip(got, want, strict=True))

    got = fast.score_block(QUERIES, items)
    assert min(spearmanr(g, w).statistic for g, w in zip(got, want, strict=True)) > 0.99
    for layer in fast.cls_forward.layers:  # the same int8 weights, the [CLS] row in int8 too
        for name in ("qkv", "out", "up", "down"):
            getattr(layer, name).float_first_row = False
    assert ranking_error(fast.score_block(QUERIES, items)) > 2 * ranking_error(got)


def test_maxsim_prepared_queries_and_empty_item():
    cfg = ScorerConfig(kind="maxsim-minilm", max_query_tokens=16, max_item_tokens=24)
    items = [*ITEMS, ""]  # no content tokens: scores 0
    want = build_scorer(cfg).score_block(QUERIES, items)
    assert (want[:, -1] == 0).all() and (want[:, :-1] != 0).all()
    driver, worker = build_scorer(cfg), build_scorer(cfg)
    worker.load_queries(QUERIES, driver.prepare_queries(QUERIES))
    encoded, encode = [], worker.encode
    worker.encode = lambda texts, max_len: encoded.extend(texts) or encode(texts, max_len)
    np.testing.assert_allclose(worker.score_block(QUERIES, items), want, atol=1e-6)
    assert encoded == items  # the queries came from the driver


def test_maxsim_int8_stays_close_to_fp32():
    items = [t for _, t in make_texts(30, seed=4, prefix="d")]
    want = build_scorer(ScorerConfig(kind="maxsim-minilm")).score_block(QUERIES, items)
    fast = build_scorer(ScorerConfig(kind="maxsim-minilm", options={"precision": "int8"}))
    assert 0 < np.abs(fast.score_block(QUERIES, items) - want).max() < 0.1


def test_tokenizer_read_without_transformers_gives_its_ids(tmp_path):
    """The MiniLM (BERT uncased) tokenizer read with `tokenizers` gives AutoTokenizer's ids, with
    and without special tokens and truncated; a config its tokenizer.json does not follow
    (cased, here) is read by transformers."""
    from transformers import AutoTokenizer

    from curindex.scoring.tokens import load_tokenizer

    path = default_minilm_path()
    texts = [*QUERIES, *ITEMS, *(t for _, t in make_texts(200, seed=6, prefix="d")),
             "", "  ", "Ünïcödé ÅÄÖ ﬁ ½ \u00a0x\u200by", "MixedCase URL https://a.b/c?d=e&f"]
    fast, want = load_tokenizer(path), AutoTokenizer.from_pretrained(path)
    assert type(fast).__name__ == "_Fast"
    for special in (True, False):
        assert fast.ids(texts, special=special) == want(texts, add_special_tokens=special)[
            "input_ids"]
    assert fast.ids(texts, special=True, max_length=12) == want(
        texts, truncation=True, max_length=12)["input_ids"]
    long = [ITEMS[2]]  # no longer truncated after a truncated call
    assert len(fast.ids(long, special=True)[0]) > 12
    assert fast.ids(long, special=True) == want(long)["input_ids"]
    enc = want("a query", "an item", return_token_type_ids=True)
    assert fast.pair("a query", "an item") == (enc["input_ids"], enc["token_type_ids"])
    assert (fast.cls_token_id, fast.sep_token_id, fast.pad_token_id, fast.model_max_length) == (
        want.cls_token_id, want.sep_token_id, want.pad_token_id, want.model_max_length)

    cased = shutil.copytree(path, tmp_path / "cased")
    config = json.loads((cased / "tokenizer_config.json").read_text())
    (cased / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    slow = load_tokenizer(cased)
    assert type(slow).__name__ == "_Transformers"
    assert slow.ids(texts, special=True) == AutoTokenizer.from_pretrained(cased)(texts)["input_ids"]
    # a pair template that is not BERT's (the second text with token type 0), which
    # transformers' BertTokenizer does not follow
    other = shutil.copytree(path, tmp_path / "template")
    spec = json.loads((other / "tokenizer.json").read_text())
    for part in spec["post_processor"]["pair"]:
        next(iter(part.values()))["type_id"] = 0
    (other / "tokenizer.json").write_text(json.dumps(spec))
    assert type(load_tokenizer(other)).__name__ == "_Transformers"
    enc = AutoTokenizer.from_pretrained(other)("a query", "an item", return_token_type_ids=True)
    assert load_tokenizer(other).pair("a query", "an item") == (enc["input_ids"],
                                                                enc["token_type_ids"])


def test_cross_encoder_streams_of_batches_give_the_same_scores(tiny_cross_encoder):
    """With several torch threads, batches run as single-threaded streams at once: the scores
    are those of one batch at a time, and the caller's thread count is left as it was."""
    cfg = ScorerConfig(kind="cross-encoder", path=str(tiny_cross_encoder), batch_size=2)
    scorer = build_scorer(cfg)
    items = [t for _, t in make_texts(30, seed=7, prefix="d")]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = scorer.score_block(QUERIES, items)
        torch.set_num_threads(3)
        got = scorer.score_block(QUERIES, items)
        seen = []  # what a thread started afterwards gets
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert torch.get_num_threads() == 3 and seen == [3]
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_score_pairs_equals_the_entries_of_score_block():
    from curindex.scoring.base import score_pairs

    s = build_scorer(ScorerConfig(kind="toy", options={"dim": "8"}))
    qs, its = ["a b", "c d e", "f"], [t for _, t in make_texts(7, seed=3, prefix="i")]
    full = s.score_block(qs, its)  # [3, 7]
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, 20), rng.integers(0, 7, 20)
    got = score_pairs(s, [qs[i] for i in a], [its[j] for j in b], where="test")
    np.testing.assert_array_equal(got, full[a, b])
    assert score_pairs(s, [], [], where="test").shape == (0,)
    with pytest.raises(ValueError, match="do not pair up"):
        score_pairs(s, ["a"], [], where="test")
