"""Every numeric setting is bounded when a config is loaded, a scorer's settings must fit its
model, and the scorer settings a manifest records are checked the same way before a reader
builds anything from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from curindex.cli import main
from curindex.cli.exits import BAD_INPUT
from curindex.config import ScorerConfig, config_from_dict
from curindex.errors import ConfigError, ScorerError
from curindex.scoring.base import fingerprint_for
from curindex.search import trusted_scorer_config
from support import make_texts, save_bert_classifier, to_toml, write_corpus

MINIMAL = {"items": {"path": "items.jsonl"}, "queries": {"path": "queries.jsonl"}}
BIG = 2**63 - 1


def load(**sections) -> None:
    config_from_dict({**MINIMAL, **{k: {**MINIMAL.get(k, {}), **v}
                                    for k, v in sections.items()}})


@pytest.mark.parametrize(("section", "key", "value"), [
    ("anchors", "n_queries", 10**8),
    ("anchors", "n_queries", BIG),
    ("anchors", "n_test", BIG),
    ("anchors", "seed", -1),
    ("anchors", "seed", BIG),
    ("scorer", "batch_size", 10**9),
    ("scorer", "max_query_tokens", 10**9),
    ("scorer", "max_item_tokens", BIG),
    ("scorer", "threads", 10**6),
    ("factorize", "min_rank", BIG),
    ("factorize", "tune_rconds", [1e-3] * 1000),
    ("index", "nprobe", BIG),
    ("index", "nprobe", 0),
    ("index", "ef_search", BIG),
    ("validate", "ks", [1, BIG]),
    ("validate", "ks", list(range(1, 1000))),
    ("validate", "budgets", [200, BIG]),
    ("validate", "rounds", [2, 10**6]),
    ("validate", "seed_sizes", [BIG]),
    ("validate", "objective", "1@" + "9" * 5000),
    ("validate", "min_recall", {"1@" + "9" * 5000: 0.5}),
    ("spark", "block_items", BIG),
    ("spark", "block_items", 0),
])
def test_every_numeric_setting_is_bounded(section, key, value):
    sections = {section: {key: value}}
    if (section, key) == ("anchors", "n_test"):
        sections["anchors"]["n_queries"] = 500
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key}"):
        load(**sections)


def test_the_largest_allowed_values_load():
    load(anchors={"n_queries": 100_000, "n_items": 100_000, "n_test": 100_000,
                  "seed": 2**32 - 1},
         scorer={"batch_size": 65_536, "threads": 1024},
         index={"nprobe": 1 << 20, "ef_search": 1 << 16},
         validate={"ks": [1, 100_000], "budgets": [1_000_000], "rounds": [100]},
         spark={"block_items": 1_000_000})


@pytest.mark.parametrize(("option", "value"), [("vocab", "2000000000"), ("dim", "100000"),
                                                ("seed", "-1"), ("seed", str(2**64))])
def test_toy_options_are_bounded(option, value):
    with pytest.raises(ConfigError, match=rf"\[scorer\] options.{option}"):
        load(scorer={"kind": "toy", "options": {option: value}})


@pytest.mark.parametrize("n_queries", [10**8, BIG])
def test_a_huge_query_count_is_a_named_error_in_plan(tmp_path, capsys, n_queries):
    texts = make_texts(30, seed=1, prefix="doc")
    write_corpus(tmp_path, texts, texts)
    conf = tmp_path / "big.toml"
    conf.write_text(to_toml({"items": {"path": "items.jsonl"},
                             "queries": {"path": "queries.jsonl"},
                             "anchors": {"n_queries": n_queries, "n_items": 10},
                             "scorer": {"kind": "toy"}}))
    assert main(["plan", "--conf", str(conf)]) == BAD_INPUT
    err = capsys.readouterr().err
    assert "[anchors] n_queries" in err and "Traceback" not in err


@pytest.mark.parametrize(("settings", "key"), [
    ({"kind": "toy", "options": {"vocab": "2000000000"}}, "options.vocab"),
    ({"kind": "toy", "batch_size": -1}, "batch_size"),
    ({"kind": "toy", "max_item_tokens": 10**12}, "max_item_tokens"),
    ({"kind": "cross-encoder", "path": ""}, "path"),
])
def test_recorded_scorer_settings_are_checked_again(settings, key):
    recorded = {**ScorerConfig().__dict__, **settings}
    with pytest.raises(ScorerError, match=rf"version v1: .*\[scorer\] {key}"):
        trusted_scorer_config(recorded, version="v1")


def test_maxsim_token_limits_fit_the_models_positions():
    fingerprint_for(ScorerConfig(kind="maxsim-minilm", max_item_tokens=512))
    with pytest.raises(ScorerError, match=r"\[scorer\] max_item_tokens = 600 .* 512"):
        fingerprint_for(ScorerConfig(kind="maxsim-minilm", max_item_tokens=600))
    with pytest.raises(ScorerError, match=r"\[scorer\] max_query_tokens"):
        fingerprint_for(ScorerConfig(kind="maxsim-minilm", max_query_tokens=513))


def test_a_cross_encoders_query_must_fit_its_positions(tmp_path: Path):
    from curindex.scoring.base import build_scorer

    model = save_bert_classifier(tmp_path / "m", hidden=16, layers=1, heads=2, ffn=32,
                                 max_position_embeddings=40)
    ok = ScorerConfig(kind="cross-encoder", path=str(model), max_query_tokens=30,
                      max_item_tokens=500)  # items take what the query leaves
    scorer = build_scorer(ok)
    assert scorer.score_block(["a b c " * 40], ["d e f " * 200]).shape == (1, 1)
    too_long = ScorerConfig(kind="cross-encoder", path=str(model), max_query_tokens=40)
    with pytest.raises(ScorerError, match=r"\[scorer\] max_query_tokens = 40 .* 40"):
        fingerprint_for(too_long)
    with pytest.raises(ScorerError, match="label_index"):
        build_scorer(ScorerConfig(kind="cross-encoder", path=str(model), max_query_tokens=8,
                                  options={"label_index": "3"}))
