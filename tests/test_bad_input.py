"""Each bad input is an error naming the input and the problem, and nothing is published."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curindex.config import config_from_dict
from curindex.errors import FactorizeError, InputError, ScorerError, StoreError
from curindex.manifest import Manifest
from curindex.pipeline import run_build
from curindex.store import Store
from support import make_texts, tiny_config, write_jsonl

pytestmark = pytest.mark.spark


def build_fails(spark, raw: dict, error: type, fragment: str) -> None:
    cfg = config_from_dict(raw)
    with pytest.raises(error) as e:
        run_build(spark, cfg, version="bad", publish=True)
    assert fragment in str(e.value), str(e.value)
    store = Store.open(cfg.store.uri)
    assert store.current() is None
    assert store.list_versions() == []


def items_file(tmp_path, rows, name="items.jsonl"):
    return write_jsonl(tmp_path / name, rows)


def good_items(n=300):
    return [{"_id": i, "title": "", "text": t} for i, t in make_texts(n, seed=1, prefix="doc")]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda rows: [*rows, {"_id": "doc00007", "title": "", "text": "again"}],
         "duplicate ids (for example 'doc00007')"),
        (lambda rows: [*rows[:5], {"_id": "nul", "title": None, "text": None}, *rows[5:]],
         "1 rows have null or empty text (ids: 'nul')"),
        (lambda rows: [*rows, {"_id": "blank", "title": " ", "text": "  "}],
         "null or empty text (ids: 'blank')"),
        (lambda rows: [{k: v for k, v in r.items() if k != "text"} for r in rows],
         "missing column 'text'"),
        (lambda rows: rows[:8], "8 items, fewer than k_i = 12 anchor items"),
        (lambda rows: [], "no rows (empty items)"),
        (lambda rows: [*rows, {"_id": None, "title": "", "text": "x y"}], "null id"),
        (lambda rows: [*rows, {"_id": " ", "title": "", "text": "x y"}],
         "1 rows have an empty id"),
    ],
)
def test_bad_items(spark, tiny_corpus, tmp_path, mutate, fragment):
    path = items_file(tmp_path, mutate(good_items()), name="bad.jsonl")
    raw = tiny_config(tiny_corpus, items={"path": str(path)})
    build_fails(spark, raw, InputError, fragment)


def test_missing_file(spark, tiny_corpus, tmp_path):
    raw = tiny_config(tiny_corpus, items={"path": str(tmp_path / "nope.parquet")})
    build_fails(spark, raw, InputError, "nope.parquet': file or folder not found")


def test_non_utf8_text(spark, tiny_corpus, tmp_path):
    path = tmp_path / "latin1.jsonl"
    lines = [json.dumps(r).encode() for r in good_items()]
    lines.append(b'{"_id": "latin", "title": "", "text": "caf\xe9 cr\xe8me"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    raw = tiny_config(tiny_corpus, items={"path": str(path)})
    build_fails(spark, raw, InputError, "not valid UTF-8")


def test_binary_text_column_in_parquet(spark, tiny_corpus, tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"_id": ["a", "b"], "title": ["", ""],
                             "text": pa.array([b"x", b"y"], pa.binary())}), path)
    raw = tiny_config(tiny_corpus, items={"path": str(path)})
    build_fails(spark, raw, InputError, "column 'text' is binary, not UTF-8 text")


def test_too_few_queries(spark, tiny_corpus):
    raw = tiny_config(tiny_corpus, anchors={"n_queries": 100, "n_items": 12, "n_test": 30})
    build_fails(spark, raw, InputError, "120 queries, fewer than k_q + n_test = 100 + 30 = 130")


@pytest.mark.parametrize(
    ("target", "error", "fragment"),
    [
        ("scorers:nan_scores", ScorerError, "non-finite scores (NaN or inf)"),
        ("scorers:wrong_shape", ScorerError, "expected (50, "),
        ("scorers:constant", FactorizeError, "is singular: effective rank 1 < min_rank 2"),
    ],
)
def test_bad_scorers(spark, tiny_corpus, target, error, fragment):
    raw = tiny_config(tiny_corpus, scorer={"kind": "callable", "target": target})
    build_fails(spark, raw, error, fragment)


def test_committed_version_is_immutable(spark, tiny_corpus):
    cfg = config_from_dict(tiny_config(tiny_corpus))
    first = run_build(spark, cfg, version="once").manifest
    store = Store.open(cfg.store.uri)
    # Re-running the same build is a no-op that returns the committed manifest...
    assert run_build(spark, cfg, version="once").manifest == first
    # ...and a different config can never overwrite it.
    other = config_from_dict(tiny_config(tiny_corpus, anchors={"seed": 9}))
    with pytest.raises(StoreError, match=r"version once is already committed .* different config"):
        run_build(spark, other, version="once")
    assert store.list_versions() == ["once"]
    assert Manifest.from_dict(store.read_manifest("once")) == first
