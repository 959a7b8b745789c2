"""Regression tests of hostile input: what a store's contents, a config or a query can make a
reader or a build do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curindex.config import config_from_dict
from curindex.errors import ScorerError
from curindex.pipeline import run_build
from curindex.search import Searcher
from support import tiny_config

pytestmark = pytest.mark.spark

EVIL_MODULE = """
import pathlib
pathlib.Path({mark!r}).write_text("imported")

def make(cfg):
    pathlib.Path({mark!r}).write_text("called")
    raise SystemExit(3)
"""


@pytest.fixture(scope="module")
def published(spark, tmp_path_factory):
    """A published build of the tiny corpus with the counting scorer (a callable)."""
    from support import make_texts, write_corpus

    root = tmp_path_factory.mktemp("hardening")
    corpus = write_corpus(root, make_texts(200, seed=1, prefix="doc"),
                          make_texts(80, seed=2, prefix="q"))
    log_dir = root / "log"
    log_dir.mkdir()
    raw = tiny_config(corpus, scorer={"kind": "callable", "target": "scorers:counting",
                                      "options": {"log_dir": str(log_dir)}})
    cfg = config_from_dict(raw)
    run_build(spark, cfg, version="v1", publish=True)
    return cfg.store.uri


def _edit_scorer(uri: str, **scorer) -> None:
    path = Path(uri) / "versions" / "v1" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["config"]["scorer"].update(scorer)
    doc["scorer"]["kind"] = doc["config"]["scorer"]["kind"]
    path.write_text(json.dumps(doc))


def test_a_callable_scorer_is_imported_only_when_the_reader_allows_it(published, monkeypatch):
    monkeypatch.delenv("CURINDEX_ALLOWED_SCORERS", raising=False)
    with pytest.raises(ScorerError, match="scorer_target='scorers:counting'"):
        Searcher.open(published)
    searcher = Searcher.open(published, scorer_target="scorers:counting")
    assert searcher.search(["river data"], k=2, budget=30)[0].ids
    monkeypatch.setenv("CURINDEX_ALLOWED_SCORERS", "other:thing, scorers:counting")
    assert Searcher.open(published).search(["river data"], k=2, budget=30)[0].ids


@pytest.mark.parametrize("target", ["sys:exit", "evil_scorer:make", "os:abort"])
def test_an_edited_manifest_cannot_import_or_run_code(published, tmp_path, monkeypatch,
                                                     target, capsys):
    from curindex.cli import main

    mark = tmp_path / "mark"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "evil_scorer.py").write_text(EVIL_MODULE.format(mark=str(mark)))
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))  # importable, as a module in the working directory is
    monkeypatch.setenv("CURINDEX_ALLOWED_SCORERS", "scorers:counting")
    _edit_scorer(published, target=target)
    try:
        # The store verifies (the manifest is the root of trust), yet nothing is imported.
        with pytest.raises(ScorerError, match=f"callable scorer '{target}'"):
            Searcher.open(published)
        with pytest.raises(ScorerError, match="callable scorer"):
            Searcher.open(published, scorer_target="scorers:counting")
        assert main(["search", "--store", published, "river"]) != 0
        assert "callable scorer" in capsys.readouterr().err
        assert not mark.exists()
        import sys

        assert "evil_scorer" not in sys.modules
    finally:
        _edit_scorer(published, target="scorers:counting")


def test_an_unknown_scorer_kind_in_a_manifest_is_refused(published):
    _edit_scorer(published, kind="no-such-kind")
    try:
        with pytest.raises(ScorerError, match="scorer kind 'no-such-kind'"):
            Searcher.open(published, scorer_target="scorers:counting")
    finally:
        _edit_scorer(published, kind="callable")


def test_a_list_typed_text_column_is_refused(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curindex.config import InputConfig
    from curindex.errors import InputError
    from curindex.pipeline.corpus import read_texts

    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": [["red", "shoe"], ["blue"]]}), path)
    with pytest.raises(InputError, match=r"column 'text' holds array<string> values, not text"):
        read_texts(spark, InputConfig(path=str(path), id_column="id", text_columns=["text"]),
                   role="items")


def test_an_empty_query_is_refused_before_any_model_call(published, monkeypatch):
    searcher = Searcher.open(published, scorer_target="scorers:counting")
    calls = []
    monkeypatch.setattr(searcher.scorer, "score_block",
                        lambda q, i: calls.append(1) or pytest.fail("model called"))
    for bad in ([""], ["river", "   "], ["\n\t"]):
        with pytest.raises(ValueError, match="is empty"):
            searcher.search(bad, k=2, budget=30)
    with pytest.raises(TypeError, match="not one string"):
        searcher.search("river", k=2, budget=30)
    with pytest.raises(ValueError, match="max_budget"):
        searcher.search(["river"], k=2, budget=searcher.max_budget + 1)
    assert calls == []


def test_settings_that_feed_a_label_or_a_file_name_are_bounded():
    from curindex.errors import ConfigError

    base = {"items": {"path": "x.jsonl"}, "queries": {"path": "q.jsonl"}}
    for section, key, value in (("index", "num_shards", 16_777_216),
                                ("index", "num_shards", 65_537),
                                ("spark", "score_partitions", 10**9)):
        with pytest.raises(ConfigError, match=rf"\[{section}\] {key}: must be in"):
            config_from_dict({**base, section: {key: value}})


def test_a_resumed_build_whose_version_was_pruned_starts_over(spark, tiny_corpus):
    import shutil

    from curindex.pipeline import run_stage
    from curindex.store import Store

    cfg = config_from_dict(tiny_config(tiny_corpus))
    for stage in ("prepare", "score"):
        run_stage(spark, cfg, version="p", stage=stage)
    store = Store.open(cfg.store.uri)
    # What a prune of an old incomplete version used to leave: the version's files gone, its
    # stage states kept. The resumed build must not skip prepare and then fail forever.
    shutil.rmtree(Path(store.root) / "versions" / "p")
    result = run_build(spark, cfg, version="p", publish=True)
    assert result.published and store.current() == "p"
    store.verify("p")


def test_two_builds_of_one_version_cannot_both_run(spark, tiny_corpus, tmp_path):
    import threading

    from curindex.errors import ConflictError
    from curindex.store import Store

    cfg = config_from_dict(tiny_config(tiny_corpus, store=tmp_path / "racing"))
    outcomes: dict[str, object] = {}
    start = threading.Barrier(2)

    def build(name: str) -> None:
        start.wait()
        try:
            outcomes[name] = run_build(spark, cfg, version="same")
        except ConflictError as e:
            outcomes[name] = e

    threads = [threading.Thread(target=build, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o for o in outcomes.values() if isinstance(o, ConflictError)]
    done = [o for o in outcomes.values() if not isinstance(o, ConflictError)]
    assert len(errors) == 1 and len(done) == 1, outcomes
    assert "build lock of version same" in str(errors[0]) and "pid" in str(errors[0])
    store = Store.open(cfg.store.uri)
    store.verify("same")
    clean = run_build(spark, config_from_dict(tiny_config(tiny_corpus, store=tmp_path / "clean")),
                      version="same")
    assert store.read_manifest("same")["validation"] == clean.manifest.to_dict()["validation"]
    assert store.read_manifest("same")["anchors"] == clean.manifest.to_dict()["anchors"]
