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
    from support import make_texts, write_jsonl

    root = tmp_path_factory.mktemp("hardening")
    corpus = {
        "root": root,
        "items_path": write_jsonl(root / "items.jsonl", [
            {"_id": i, "title": "", "text": t} for i, t in make_texts(200, seed=1, prefix="doc")]),
        "queries_path": write_jsonl(root / "queries.jsonl", [
            {"_id": i, "text": t} for i, t in make_texts(80, seed=2, prefix="q")]),
    }
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
