"""Reading corpora in every supported format into (id, text)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curindex.config import InputConfig, QueriesConfig
from curindex.inputs import demo
from curindex.pipeline.corpus import check_texts, read_texts
from support import write_jsonl

pytestmark = pytest.mark.spark


def rows(df):
    return sorted((r["id"], r["text"]) for r in df.collect())


def test_beir_folder_joins_title_and_text(spark, tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [
        {"_id": "a", "title": "Title", "text": "body one"},
        {"_id": "b", "title": "", "text": "body two"},
        {"_id": 3, "title": None, "text": "body three"},
    ])
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "what is it"}])
    items = read_texts(spark, InputConfig(path=str(tmp_path)), role="items")
    assert rows(items) == [("3", "body three"), ("a", "Title: body one"), ("b", "body two")]
    queries = read_texts(spark, QueriesConfig(path=str(tmp_path)), role="queries")
    assert rows(queries) == [("q1", "what is it")]
    stats = check_texts(items, role="items", source=str(tmp_path))
    assert stats.rows == 3 and stats.max_chars == len("Title: body one")


def test_beir_corpus_without_titles(spark, tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "only text"}])
    items = read_texts(spark, InputConfig(path=str(tmp_path)), role="items")
    assert rows(items) == [("a", "only text")]


def test_parquet_with_configured_columns(spark, tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"doc": [10, 11], "head": ["H", None], "body": ["x", "y"]}), path)
    cfg = InputConfig(path=str(path), id_column="doc", text_columns=["head", "body"],
                      text_separator=" | ")
    assert rows(read_texts(spark, cfg, role="items")) == [("10", "H | x"), ("11", "y")]


def test_builtin_demo_corpus(spark):
    items = read_texts(spark, InputConfig(path="builtin:stdlib-docs"), role="items")
    queries = read_texts(spark, QueriesConfig(path="builtin:stdlib-docs"), role="queries")
    n_items = check_texts(items, role="items", source="builtin").rows
    n_queries = check_texts(queries, role="queries", source="builtin").rows
    assert n_items > 1000 and n_queries > 1000
    assert n_items == len(demo.items_table()[0])
    texts = dict(demo.items_table()[1][i].split(": ", 1) for i in range(3))
    assert all(t for t in texts.values())


def test_demo_queries_are_first_sentences_of_real_docstrings():
    ids, texts = demo.queries_table()
    assert len(ids) == len(set(ids)) == len(set(texts))
    by_name = {n: d for n, _, d in demo.stdlib_docs()}
    for qid, text in list(zip(ids, texts, strict=True))[:50]:
        assert by_name[qid.removeprefix("q:")].replace("\n", " ").startswith(text[:20])
