"""Synthetic tuning queries (``[validate] synthetic_tuning``): where the log's test queries
leave too few to tune on, a build makes tuning queries from items and chooses its search on
them, held to the baseline on the log's own tuning queries."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from curindex.config import ConfigError, config_from_dict, synthetic_tests, validation_queries
from curindex.pipeline import run_build
from curindex.pipeline.anchors import SYNTHETIC_PREFIX, synthetic_query
from curindex.pipeline.stages.validate import _choices
from curindex.quality.validation import Table
from curindex.search.methods import SearchSpec
from curindex.store import Store
from support import tiny_config

pytestmark = pytest.mark.spark

PATHS = {"items": {"path": "items.jsonl"}, "queries": {"path": "queries.jsonl"}}
VALIDATE = {"ks": [1, 5], "budgets": [20, 40], "rounds": [2], "seed_sizes": [10]}


@pytest.mark.parametrize(("n_test", "fraction", "setting", "made"), [
    (10, 0.5, 50, 50),  # 5 tuning queries: too few
    (19, 0.5, 30, 30),  # 9
    (20, 0.5, 50, 0),  # 10 are enough
    (50, 0.5, 50, 0),  # the default: 25
    (10, 0.5, 0, 0),  # never
    (0, 0.5, 50, 0),  # no validation
    (30, 0.2, 7, 7),  # 6
])
def test_tuning_queries_are_made_only_where_the_log_leaves_too_few(n_test, fraction, setting,
                                                                  made):
    cfg = config_from_dict({**PATHS, "anchors": {"n_test": n_test},
                            "factorize": {"tune_fraction": fraction},
                            "validate": {"synthetic_tuning": setting}})
    assert synthetic_tests(cfg) == made and validation_queries(cfg) == n_test + made


def test_a_negative_synthetic_tuning_is_refused():
    with pytest.raises(ConfigError, match="synthetic_tuning"):
        config_from_dict({**PATHS, "validate": {"synthetic_tuning": -1}})


def _queries(store_uri, version: str) -> list[tuple[str, str, str]]:
    """(id, text, role) of every query a version's prepare stage chose, in order."""
    t = pq.read_table(io.BytesIO(Store.open(str(store_uri)).read_bytes(
        version, "anchors/queries.parquet"))).to_pydict()
    return list(zip(t["id"], t["text"], t["role"], strict=True))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_a_small_log_tunes_on_queries_made_from_items_and_reports_on_its_own(
        spark, tiny_corpus, tmp_path, kind):
    """6 test queries leave 3 to tune on: with synthetic_tuning = 20 the build makes 20
    tuning queries from items (none shares an item with the synthetic anchor or training
    queries) and chooses on them; the log's 6 split 3 (holding the choice to the baseline)
    and 3 (reported) as without, where the baseline serves for want of tuning queries."""
    index = {"methods": ["bi-rerank", "cur", "adaptive"]} if kind == "dense" else {
        "kind": "sparse", "methods": ["bi-rerank", "bi-seeded"]}
    made = {"anchors": {"synthetic_queries": 5}} if kind == "dense" else {
        "sparse": {"neighbours": 6, "random_items": 2, "synthetic_queries": 30, "hidden": 16,
                   "epochs": 4, "patience": 2, "batch_size": 128}}
    docs = {}
    for setting in (20, 0):
        raw = tiny_config(tiny_corpus, store=tmp_path / f"s{setting}", index=index,
                          validate={**VALIDATE, "synthetic_tuning": setting,
                                    "ground_truth": "exact"},
                          anchors={"n_queries": 40, "n_items": 12, "n_test": 6, "seed": 3,
                                   **made.get("anchors", {})},
                          **{k: v for k, v in made.items() if k != "anchors"})
        cfg = config_from_dict(raw)
        docs[setting] = (run_build(spark, cfg, version="v").manifest,
                         _queries(cfg.store.uri, "v"))
        page = Store.open(cfg.store.uri).read_bytes("v", "report/report.html").decode()
        assert ("Chosen on 23 tuning queries (20 made from items" in page) == (setting == 20)
    (with_made, queries), (without, queries0) = docs[20], docs[0]
    tests = [i for i, _, r in queries if r == "test"]
    logged = [i for i in tests if not i.startswith(SYNTHETIC_PREFIX)]
    assert (with_made.anchors.n_test, with_made.anchors.n_tune) == (26, 23)
    assert tests[:23] == list(with_made.search.selection.tune_ids)
    assert all(i.startswith(SYNTHETIC_PREFIX) for i in tests[:20])
    assert with_made.search.selection.synthetic == 20
    # the log's test queries are the build's without synthetic tuning, split the same way
    assert logged == tests[20:] == [i for i, _, r in queries0 if r == "test"]
    assert with_made.validation.n_test == without.validation.n_test == 3
    assert without.anchors.n_tune == 3
    # made from items no other synthetic query uses, as synthetic anchor queries are made
    others = {i for i, _, r in queries if r == "anchor" and i.startswith(SYNTHETIC_PREFIX)}
    assert others and not others & set(tests[:20])
    items, texts = dict(tiny_corpus["items"]), {i: t for i, t, _ in queries}
    for i in tests[:20]:
        assert texts[i] == synthetic_query(items[i.removeprefix(SYNTHETIC_PREFIX)])
    # chosen on 20 tuning queries; the build without them cannot choose
    assert "too few" not in with_made.search.selection.reason
    assert "too few" in without.search.selection.reason
    # made queries choose among the searches that score the bi-encoder's top items only
    weighed = {c.method for b in with_made.search.by_budget for c in b.candidates}
    assert weighed and weighed <= {"bi-rerank", "bi-seeded"}
    assert all("queries made from items choose among the searches seeded" in b.reason
               for b in with_made.search.by_budget)
    assert {c.method for b in without.search.by_budget for c in b.candidates} == \
        set(index["methods"])
    # exact truth: every test query, made or logged, against every item
    # (and the plan counted them)
    assert with_made.counts.validation_pairs == 26 * with_made.counts.items == \
        with_made.plan.pairs["test"]


def test_made_queries_choose_among_seeded_searches_even_with_no_log_query_to_hold_them():
    """On constructed figures where adaptive is best on 20 made queries: the choice is the
    best bi-encoder-seeded search, whether or not the log left tuning queries (an empty
    guard), and the log's queries, where there are, hold it to the baseline."""
    bi, ad4, seeded = (SearchSpec("bi-rerank"), SearchSpec("adaptive", 4),
                       SearchSpec("bi-seeded", 4, 25))
    made = {bi: 0.8, ad4: 1.0, seeded: 0.9}
    log_figures = {bi: 0.9, ad4: 1.0, seeded: 0.7}  # queries 20..23: the log's
    tab = Table({s: {f: {**{t: made[s] for t in range(20)},
                         **{t: log_figures[s] for t in range(20, 24)}}
                     for f in ("1@50", "10@50")} for s in made})
    specs = [bi, ad4, seeded]

    def served(guard):
        return _choices(tab, specs, [50], [1, 10], range(20), guard)[50]

    assert served(None).chosen == ad4  # real tuning queries: every method
    assert served(range(20, 20)).chosen == seeded
    assert "made from items choose among" in served(range(20, 20)).reason
    assert served(range(20, 24)).chosen == bi  # below the baseline on the log's
