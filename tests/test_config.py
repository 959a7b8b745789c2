"""Config loading: typed values, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from curindex.config import BuildConfig, config_from_dict, load_config
from curindex.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"items": {"path": "items.jsonl"}, "queries": {"path": "queries.jsonl"}}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "build.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_demo_config_loads_and_resolves_store_under_repo():
    cfg = load_config(ROOT / "conf" / "demo.toml")
    assert isinstance(cfg, BuildConfig)
    assert cfg.store.uri == str(ROOT / "store")
    assert cfg.items.path == "builtin:stdlib-docs"
    assert cfg.anchors.n_items <= cfg.anchors.n_queries


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    p = write(tmp_path, '[items]\npath = "data/items.parquet"\n[queries]\npath = "q.jsonl"\n')
    cfg = load_config(p)
    assert cfg.items.path == str(tmp_path / "data" / "items.parquet")
    assert cfg.queries.text_columns == ["text"]
    assert cfg.items.text_columns == ["title", "text"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"anchors": {"n_itmes": 3}}, "[anchors] n_itmes"),
        ({"anchors": {"n_items": "50"}}, "[anchors] n_items: expected int, got str"),
        ({"anchors": {"n_items": 60, "n_queries": 50}}, "k_i = 60 > k_q"),
        ({"anchors": {"n_test": -1}}, "[anchors] n_test"),
        ({"scorer": {"kind": "bm25"}}, "[scorer] kind"),
        ({"scorer": {"kind": "cross-encoder"}}, "[scorer] path"),
        ({"scorer": {"kind": "callable", "target": "nomodule"}}, "[scorer] target"),
        ({"factorize": {"rcond": 1.5}}, "[factorize] rcond"),
        ({"index": {"num_shards": 0}}, "[index] num_shards"),
        ({"anchors": {"items": "best"}}, "[anchors] items"),
        ({"spark": {"conf": {"a": [1]}}}, "[spark] conf.a"),
        ({"bogus": {}}, "unknown key 'bogus'"),
    ],
)
def test_bad_values_name_file_and_key(extra, fragment):
    with pytest.raises(ConfigError) as e:
        config_from_dict({**MINIMAL, **extra}, source="my.toml")
    assert "my.toml" in str(e.value)
    assert fragment in str(e.value)


def test_missing_required_section_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"\[queries\]: required key is missing"):
        config_from_dict({"items": {"path": "x"}}, source="s")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[items\npath="))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_to_dict_round_trips():
    cfg = config_from_dict({**MINIMAL, "spark": {"conf": {"x": 1, "y": True}}})
    assert cfg.spark.conf == {"x": "1", "y": "true"}
    again = config_from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_a_sparse_build_has_no_anchor_items_to_outnumber_its_queries():
    """k_i > k_q is refused for a dense build only: a sparse one uses no anchor items."""
    raw = {**MINIMAL, "anchors": {"n_items": 50, "n_queries": 15},
           "index": {"kind": "sparse", "methods": ["bi-rerank", "bi-seeded"]}}
    assert config_from_dict(raw).index.kind == "sparse"
    with pytest.raises(ConfigError, match="k_i = 50 > k_q"):
        config_from_dict({**raw, "index": {"kind": "dense"}})
