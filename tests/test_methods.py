"""Every search method, validated in Spark, against the Searcher: the build's figures are what
the Searcher returns for the same queries on the same version, item for item; the served search
follows the manifest; the gate applies to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curindex.config import config_from_dict
from curindex.errors import QualityGateError
from curindex.pipeline import run_build, run_stage
from curindex.pipeline.context import BuildContext
from curindex.pipeline.stages.validate import searches
from curindex.quality.figures import Figure
from curindex.quality.validation import candidates, returned
from curindex.search import Searcher
from curindex.search.methods import SearchSpec
from curindex.store import Store
from support import make_texts, tiny_config, write_corpus

pytestmark = pytest.mark.spark

ALL = ["bi-rerank", "cur", "adaptive", "bi-seeded"]
VALIDATE = {"ks": [1, 5], "budgets": [10, 20, 40, 60], "objective": "5@40",
            "rounds": [2, 3], "seed_sizes": [5, 15]}


def corpus(root: Path) -> dict:
    # Unique texts: equal scores would make "which of two ties" a matter of index internals.
    items = list(dict(make_texts(260, seed=11, prefix="doc", min_words=5)).items())
    seen, unique = set(), []
    for i, t in items:
        if t not in seen:
            seen.add(t)
            unique.append((i, t))
    queries = make_texts(90, seed=12, prefix="q", min_words=2, max_words=5)
    return write_corpus(root, unique, queries)


@pytest.mark.parametrize("encoding", ["float16", "sq8"])
def test_validation_is_what_the_searcher_returns(spark, tmp_path, encoding):
    raw = tiny_config(corpus(tmp_path), scorer={"kind": "toy", "options": {"dim": "24"}},
                      anchors={"n_queries": 40, "n_items": 8, "n_test": 12, "seed": 3},
                      index={"methods": ALL, "encoding": encoding}, validate=VALIDATE)
    cfg = config_from_dict(raw)
    for stage in ("prepare", "score", "factorize", "write_shards"):
        run_stage(spark, cfg, version="m", stage=stage)
    ctx = BuildContext(spark, cfg, "m")
    anchors = ctx.anchors()
    specs = candidates(ALL, VALIDATE["rounds"], VALIDATE["seed_sizes"])
    n_tune = ctx.n_tune()
    run = searches(ctx, anchors, specs, [10, 20, 40, 60])
    for stage in ("validate", "commit"):
        run_stage(spark, cfg, version="m", stage=stage)
    store = Store.open(cfg.store.uri)
    from curindex.ops.publish import publish_version

    publish_version(store, "m")
    searcher = Searcher.open(cfg.store.uri)
    checked = set()
    for plan, job in zip(run.plans, run.jobs, strict=True):
        budgets = [job.budget] if job.spec.rounds > 1 else \
            [b for b in run.budgets_of[job.query] if b <= job.budget]
        for b in budgets:
            if job.spec.seed == "anchors" and b <= len(anchors.item_ids):
                continue
            want = searcher.search([anchors.test_texts[job.query]], k=5, budget=b,
                                   method=job.spec.method, rounds=job.spec.rounds,
                                   seed_size=job.spec.seed_size or None)[0]
            got = returned(plan, b, k=5, **run.ranking)
            assert got == want.ids, (job, b)
            assert want.model_calls == min(b, searcher.n_items)
            checked.add((job.spec.method, b))
    # every method at every budget it can run at
    assert {m for m, _ in checked} == set(ALL)
    assert {b for _, b in checked} == {10, 20, 40, 60}

    # The recorded figures are the mean recall of those answers on the reporting queries,
    # each budget's from the search served at that budget.
    manifest = store.read_manifest("m")
    served = {c["budget"]: SearchSpec(c["method"], c["rounds"], c["seed_size"])
              for c in manifest["search"]["by_budget"]}
    assert sorted(served) == [10, 20, 40, 60]
    reporting = range(n_tune, len(anchors.test_ids))
    texts = [anchors.test_texts[t] for t in reporting]
    scorer = searcher.scorer
    ids, all_texts = searcher.shards.all_items()
    exact = scorer.score_block(texts, all_texts)
    for name, value in manifest["validation"]["recall"].items():
        f = Figure.parse(name)
        got = searcher.search(texts, k=f.k, budget=f.budget)
        hits = [len(set(r.ids) & {ids[j] for j in np.argsort(-exact[i], kind="stable")[:f.k]})
                / f.k for i, r in enumerate(got)]
        assert value == pytest.approx(float(np.mean(hits)), abs=1e-12), name
        assert all(r.method == served[f.budget].describe() for r in got)


@pytest.fixture(scope="module")
def served(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    raw = tiny_config(corpus(root), scorer={"kind": "toy", "options": {"dim": "24"}},
                      anchors={"n_queries": 40, "n_items": 8, "n_test": 30, "seed": 3},
                      index={"methods": ALL}, validate=VALIDATE)
    cfg = config_from_dict(raw)
    result = run_build(spark, cfg, version="s", publish=True)
    return {"raw": raw, "cfg": cfg, "result": result, "root": root}


def test_the_searcher_serves_the_manifests_search(served):
    manifest = served["result"].manifest
    default = manifest.search.default
    searcher = Searcher.open(served["cfg"].store.uri)
    assert searcher.served == default and default.budget == 40
    spec = SearchSpec(default.method, default.rounds, default.seed_size)
    r = searcher.search(["river data storm"], k=3)[0]
    assert r.method == spec.describe() and r.model_calls <= 40
    explicit = searcher.search(["river data storm"], k=3, budget=default.budget,
                               method=default.method, rounds=default.rounds,
                               seed_size=default.seed_size or None)[0]
    assert explicit.ids == r.ids
    other = searcher.search(["river data storm"], k=3, budget=30, method="cur")[0]
    assert other.method == "cur" and other.model_calls == 30
    # the selection is recorded with every candidate, and the table marks the served method
    sel = manifest.search.selection
    assert sel is not None and sel.n_tune == 15 and len(sel.tune_ids) == 15
    assert {(c.method, c.rounds, c.seed_size) for c in sel.candidates} == {
        (s.method, s.rounds, s.seed_size) for s in candidates(ALL, [2, 3], [5, 15])}
    assert [m.method for m in manifest.search.methods if m.served] == [default.method]


def test_an_old_manifest_without_a_served_search_opens_as_plain_cur(served, tmp_path):
    import shutil

    uri = str(tmp_path / "store")
    shutil.copytree(served["cfg"].store.uri, uri)
    path = Path(uri) / "versions" / "s" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["format"] = 2
    del doc["search"]
    del doc["validation"]["min_lift_over_baseline"]
    index = doc["config"]["index"]
    del index["methods"], index["encoding"]
    index.update(adaptive=True, biencoder=True)
    for key in ("objective", "rounds", "seed_sizes", "min_lift_over_baseline"):
        del doc["config"]["validate"][key]
    doc["config"]["validate"]["baseline"] = "bi-encoder"
    path.write_text(json.dumps(doc))
    searcher = Searcher.open(uri, verify=False)
    assert searcher.served.method == "cur" and searcher.served.budget == 200
    assert searcher.manifest.config.index.methods == ["cur", "adaptive", "bi-seeded",
                                                      "bi-rerank"]
    r = searcher.search(["river data storm"], k=3, budget=30)[0]
    assert r.method == "cur" and r.model_calls == 30
    assert searcher.search(["river data"], k=3, budget=30, rounds=2)[0].method.startswith(
        "adaptive")


def test_the_gate_refuses_a_served_search_under_the_baseline(spark, served, tmp_path):
    base = served["result"].manifest
    figures = dict(base.validation.recall)
    baseline = dict(base.validation.baseline.recall)
    lift = min(figures[n] - baseline[n] for n in figures if n in baseline)
    raw = {**served["raw"], "store": {"uri": str(tmp_path / "gated")},
           "validate": {**served["raw"]["validate"], "min_lift_over_baseline": lift + 0.01}}
    with pytest.raises(QualityGateError, match="min_lift_over_baseline") as e:
        run_build(spark, config_from_dict(raw), version="g", publish=True)
    assert "bi-encoder baseline" in str(e.value) and "served" in str(e.value)
    store = Store.open(str(tmp_path / "gated"))
    assert store.current() is None and store.list_versions() == ["g"]
    # a margin that allows the figures publishes
    raw["validate"]["min_lift_over_baseline"] = lift - 0.01
    raw["store"] = {"uri": str(tmp_path / "margin")}
    assert run_build(spark, config_from_dict(raw), version="g", publish=True).published


def _exact_and_pooled(spark, tmp_path, methods: list[str], **validate):
    """The manifests of two builds of one config, with exact and with pooled truth."""
    root = corpus(tmp_path)
    docs = []
    for truth in ("exact", "pooled"):
        raw = tiny_config(root, store=tmp_path / truth,
                          scorer={"kind": "toy", "options": {"dim": "24"}},
                          anchors={"n_queries": 40, "n_items": 8, "n_test": 24, "seed": 3},
                          index={"methods": methods},
                          validate={**VALIDATE, "ground_truth": truth, **validate})
        docs.append(run_build(spark, config_from_dict(raw), version="p").manifest)
    return docs


def test_a_pool_that_cannot_miss_reproduces_exact_recall_bit_for_bit(spark, tmp_path):
    """Pooled validation whose pools hold every item (the bi-encoder's top N) finds the same
    exact top items, so every method's figures and the choice equal exact validation's."""
    exact, pooled = _exact_and_pooled(spark, tmp_path, ALL, pool_depth=1000, audit_items=0)
    assert (exact.validation.ground_truth, pooled.validation.ground_truth) == ("exact", "pooled")
    assert pooled.validation.pool.mean_pool_size == pooled.counts.items  # nothing outside
    assert [m.recall for m in pooled.search.methods] == [m.recall for m in exact.search.methods]
    assert pooled.validation.recall == exact.validation.recall
    assert pooled.search.by_budget == exact.search.by_budget
    # what each cost: every test query against every item, or its pool's pairs
    assert exact.counts.validation_pairs == exact.counts.items * 24
    assert pooled.counts.validation_pairs == pooled.validation.pool.pairs > 0
    assert pooled.counts.index_pairs == exact.counts.index_pairs == exact.counts.items * 40


def test_pooled_validation_without_the_bi_encoder_brackets_exact_recall(spark, tmp_path):
    """A build that does not embed its items pools what its searches scored and their
    rankings read further (no bi-encoder neighbours); with an audit of every item the audit
    counts the pool's misses exactly, and each method's exact recall lies within its pooled
    recall minus them."""
    exact, pooled = _exact_and_pooled(spark, tmp_path, ["cur", "adaptive"], audit_items=1000,
                                      pool_depth=30)
    pool = pooled.validation.pool
    assert pool.depth == 30 and pool.mean_pool_size < pooled.counts.items
    n_report = pooled.validation.n_test
    checked = 0
    for e, p in zip(exact.search.methods, pooled.search.methods, strict=True):
        assert (e.method, e.rounds, e.seed_size) == (p.method, p.rounds, p.seed_size)
        for name, value in e.recall.items():
            k = Figure.parse(name).k
            estimate, _, high = pool.misses[name]
            assert p.recall[name] - high / n_report / k - 1e-9 <= value <= p.recall[name] + 1e-9
            # the audit saw every item outside the pool: its estimate is the count of misses
            assert estimate == int(estimate)
            checked += 1
    assert checked > 0
