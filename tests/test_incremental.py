"""Incremental builds (``--base``): only new and changed items are scored, untouched shards are
shared with the base by reference, and the result equals numpy CUR of the changed corpus with
the base's anchors (an anchor item deleted or changed stays an anchor by its stored text but is
no result)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curindex.config import ScorerConfig, config_from_dict
from curindex.errors import ConfigError, CurIndexError, StoreError
from curindex.pipeline import run_build
from curindex.pipeline.score import shard_of
from curindex.quality.evaluate import recall_brute_force
from curindex.quality.figures import figure_grid
from curindex.scoring.base import build_scorer
from curindex.search import Searcher
from curindex.search.reader import read_id_map
from curindex.store import Store
from support import make_texts, read_version_vectors, tiny_config, write_jsonl

pytestmark = pytest.mark.spark

N_SHARDS = 6


def _corpus(root: Path, items: list[tuple[str, str]], name: str) -> dict:
    queries = make_texts(120, seed=2, prefix="q", min_words=2, max_words=5)
    return {"items": items, "queries": queries, "root": root,
            "items_path": write_jsonl(root / f"{name}.jsonl",
                                      [{"_id": i, "title": "", "text": t} for i, t in items]),
            "queries_path": write_jsonl(root / "queries.jsonl",
                                        [{"_id": i, "text": t} for i, t in queries])}


def _config(corpus: dict, store: Path | None = None) -> dict:
    return tiny_config(corpus, store=store, scorer={"kind": "toy", "options": {"dim": "32"}},
                       index={"num_shards": N_SHARDS, "keep_scores": True,
                              "methods": ["cur", "adaptive"]})


def _shard_members(store: Store, version: str) -> dict[int, list[str]]:
    out = {}
    for s in store.read_manifest(version)["index"]["shards"]:
        ids = read_id_map(store.local_path(version, s["ids"]))
        out[s["shard"]] = ids.column("item_id").to_pylist()
    return out


def _anchors(store: Store, version: str) -> tuple[list[str], list[str], list[str]]:
    items = pq.read_table(store.local_path(version, "anchors/items.parquet")).to_pydict()
    qs = pq.read_table(store.local_path(version, "anchors/queries.parquet")).to_pydict()
    pick = [(t, r) for t, r in zip(qs["text"], qs["role"], strict=True)]
    return (items["id"], [t for t, r in pick if r == "anchor"], [t for t, r in pick if r == "test"])


@pytest.fixture(scope="module")
def builds(spark, tmp_path_factory):
    """v1: a full build; v2: incremental on v1 with items changed, deleted and added in a few
    shards only; v3: incremental on v2, changing one item of a shard v2 shared."""
    root = tmp_path_factory.mktemp("incremental")
    items_a = make_texts(300, seed=1, prefix="doc")
    base = _corpus(root, items_a, "items-a")
    cfg1 = config_from_dict(_config(base))
    run_build(spark, cfg1, version="v1")
    store = Store.open(cfg1.store.uri)
    members = _shard_members(store, "v1")
    anchor_ids = set(_anchors(store, "v1")[0])
    # Changes confined to shards 0 and 1 (and wherever the new ids hash to), one anchor item
    # changed and one deleted among them.
    free = {s: [i for i in ids if i not in anchor_ids] for s, ids in members.items()}
    anchors_in = {s: [i for i in ids if i in anchor_ids] for s, ids in members.items()}
    assert anchors_in[0] and anchors_in[1], "the tiny corpus puts anchor items in shards 0, 1"
    changed, deleted = free[0][:3] + anchors_in[0][:1], free[1][:2] + anchors_in[1][:1]
    new = [(f"new{j:03d}", f"novel poem about {w} and rain")
           for j, w in enumerate(["carbon", "piano", "orbit", "market", "grammar"])]
    texts = dict(items_a)
    items_b = [(i, t + " storm" if i in changed else t) for i, t in items_a if i not in deleted]
    items_b += new
    new_shards = {r[0] for r in spark.createDataFrame([(i,) for i, _ in new], "id string")
                  .select(shard_of("id", N_SHARDS)).collect()}
    cfg2 = config_from_dict(_config(_corpus(root, items_b, "items-b")))
    run_build(spark, cfg2, version="v2", base="v1", publish=True)
    # v3 changes one item of a shard that v2 shared with v1 (if any is left).
    untouched = sorted(set(members) - {0, 1} - new_shards)
    target = free[untouched[0]][0]
    items_c = [(i, t + " guitar" if i == target else t) for i, t in items_b]
    cfg3 = config_from_dict(_config(_corpus(root, items_c, "items-c")))
    run_build(spark, cfg3, version="v3", base="current")
    return {"store": store, "cfg": cfg2, "cfg3": cfg3, "items_a": texts, "items_b": items_b,
            "items_c": items_c, "changed": changed, "deleted": deleted, "new": new,
            "touched": sorted({0, 1} | new_shards), "untouched": untouched, "target": target,
            "members": members, "detached": sorted([anchors_in[0][0], anchors_in[1][0]])}


def _exact(cfg, queries: list[str], texts: list[str]) -> np.ndarray:
    return build_scorer(ScorerConfig(**cfg.to_dict()["scorer"])).score_block(queries, texts)


def test_only_new_and_changed_items_are_scored(builds):
    m = builds["store"].read_manifest("v2")
    inc = m["incremental"]
    assert (inc["base"], inc["new"], inc["changed"], inc["deleted"]) == ("v1", 5, 4, 3)
    assert inc["unchanged"] == 300 - 4 - 3
    assert m["counts"]["items"] == 300 - 3 + 5
    assert m["anchors"]["detached"] == builds["detached"]
    n_q = m["anchors"]["n_queries"] + m["anchors"]["n_test"]
    # The score stage counts the rows it scored: the 9 new and changed items only.
    assert m["counts"]["pairs_scored_this_run"] == m["counts"]["pairs_scored"] == 9 * n_q
    assert inc["touched_shards"] == builds["touched"]
    assert inc["shards_written"] == builds["touched"]
    assert inc["shards_shared"] == [s for s in range(N_SHARDS) if s not in builds["touched"]]


def test_untouched_shards_are_shared_by_reference(builds):
    store = builds["store"]
    m1, m2 = store.read_manifest("v1"), store.read_manifest("v2")
    shared = [s for s in m2["index"]["shards"] if s["shard"] in m2["incremental"]["shards_shared"]]
    assert shared
    root = Path(store.root) / "versions" / "v2"
    for s in shared:
        for key in ("index", "ids", "scores", "extra_index"):
            rel = s[key]
            assert m2["references"][rel] == {"version": "v1", **m1["files"][rel]}
            assert rel not in m2["files"] and not (root / rel).exists()
    for shard in m2["incremental"]["shards_written"]:
        assert f"shards/shard-{shard:05d}.faiss" in m2["files"]
    store.verify("v2")
    # v3 was built on v2: a shard v2 shared is still held by v1, never by a reference.
    m3 = store.read_manifest("v3")
    assert m3["incremental"]["shards_written"] == [builds["untouched"][0]]
    holders = {ref["version"] for ref in m3["references"].values()}
    assert holders == {"v1", "v2"}
    for rel, ref in m3["references"].items():
        assert rel in store.read_manifest(ref["version"])["files"]
    assert m3["counts"]["pairs_scored"] == 1 * (m3["anchors"]["n_queries"]
                                                + m3["anchors"]["n_test"])


def test_vectors_and_search_equal_numpy_cur_of_the_new_corpus(builds):
    store, cfg = builds["store"], builds["cfg"]
    anchor_ids, anchor_q, test_q = _anchors(store, "v2")
    assert (anchor_ids, anchor_q) == _anchors(store, "v1")[:2]
    items_a, items_b = builds["items_a"], builds["items_b"]
    # Anchor items scored by their stored (base) texts; only the others can be results.
    anchor_texts = [items_a[a] for a in anchor_ids]
    live = [a for a in anchor_ids if a not in builds["detached"]]
    # G from the base corpus (the anchors' columns); the vectors from the new corpus's scores.
    a_ids = list(items_a)
    h_a = _exact(cfg, anchor_q, [items_a[i] for i in a_ids]).astype(np.float64)
    g = np.linalg.pinv(h_a[:, [a_ids.index(a) for a in anchor_ids]], rcond=cfg.factorize.rcond)
    ids_b, texts_b = [i for i, _ in items_b], [t for _, t in items_b]
    h_b = _exact(cfg, anchor_q, texts_b).astype(np.float64)
    want = (g @ h_b).T
    got_ids, got = read_version_vectors(store, "v2")
    assert sorted(got_ids) == sorted(ids_b)
    order = {i: j for j, i in enumerate(ids_b)}
    np.testing.assert_allclose(got, want[[order[i] for i in got_ids]],
                               atol=1e-5 * max(1.0, np.abs(want).max()))

    searcher = Searcher.open(cfg.store.uri)  # v2 is published
    assert searcher.version == "v2" and searcher.n_items == len(ids_b)
    k, n_cand = 5, 30
    queries = ["river data", "novel poem rain", "solar wind storm"]
    budget = len(anchor_ids) + n_cand
    for q, r in zip(queries, searcher.search(queries, k=k, budget=budget), strict=True):
        c = _exact(cfg, [q], anchor_texts)[0].astype(np.float64)
        approx = want @ c
        cand = [ids_b[j] for j in np.argsort(-approx, kind="stable")
                if ids_b[j] not in live][:n_cand]
        pool = live + cand
        exact = _exact(cfg, [q], [dict(items_b)[i] for i in pool])[0]
        best = np.argsort(-exact, kind="stable")[:k]
        assert r.ids == [pool[j] for j in best]
        assert r.texts == [dict(items_b)[i] for i in r.ids]  # the changed anchor: its new text
        assert r.model_calls == budget
        assert not set(r.ids) & set(builds["deleted"])
    # A budget that scores every item ranks the whole new corpus exactly: the changed anchor
    # item by its new text (found through the shards), the deleted one nowhere.
    everything = len(anchor_ids) + len(ids_b) - len(live)
    whole = searcher.search(["river data"], k=len(ids_b), budget=everything)[0]
    exact_all = _exact(cfg, ["river data"], texts_b)[0]
    assert sorted(whole.ids) == sorted(ids_b)
    np.testing.assert_allclose(whole.scores, np.sort(exact_all)[::-1], rtol=1e-6)
    got = dict(zip(whole.ids, whole.scores.tolist(), strict=True))
    assert got == pytest.approx(dict(zip(ids_b, exact_all.tolist(), strict=True)), rel=1e-6)

    # Recall was measured on the whole new corpus: unchanged items' test scores come from the
    # base's kept rows. (Reported on the test queries after the tuning ones.)
    test_q = test_q[store.read_manifest("v2")["anchors"]["n_tune"]:]
    exact = _exact(cfg, test_q, texts_b).astype(np.float64)
    approx = _exact(cfg, test_q, anchor_texts).astype(np.float64) @ g @ h_b
    budgets = [b for b in cfg.validate.budgets if b < len(ids_b)]
    grid = figure_grid(cfg.validate.ks, budgets, min_budget=len(anchor_ids))
    want_recall = recall_brute_force(exact, approx, ids_b, live, grid,
                                     extra_calls=len(anchor_ids) - len(live))
    assert store.read_manifest("v2")["validation"]["recall"] == pytest.approx(want_recall,
                                                                              abs=1e-12)


def test_prune_keeps_referenced_versions_and_verify_follows_references(builds, tmp_path):
    store = builds["store"]
    # v2 is current, v1 is referenced by v2 and v3: keep=1 may delete nothing they need.
    assert store.prune(keep=1).versions == []
    assert store.list_versions() == ["v1", "v2", "v3"]
    shared = store.read_manifest("v2")["incremental"]["shards_shared"][0]
    path = Path(store.root) / "versions" / "v1" / "shards" / f"ids-{shared:05d}.arrow"
    good = path.read_bytes()
    try:
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        with pytest.raises(StoreError, match=rf"ids-{shared:05d}.arrow \(held by version v1\)"):
            store.verify("v2")
    finally:
        path.write_bytes(good)
    store.verify("v2")


def test_bad_bases_are_refused(spark, builds, tmp_path):
    store, items_b = builds["store"], builds["items_b"]
    corpus = _corpus(tmp_path, items_b, "items")
    raw = _config(corpus, store=Path(store.root))
    raw["index"] = {**raw["index"], "num_shards": N_SHARDS + 1}
    with pytest.raises(ConfigError, match=r"\[index\] num_shards is 7 here and 6 in the base"):
        run_build(spark, config_from_dict(raw), version="bad1", base="v1")
    with pytest.raises(CurIndexError, match="version nope does not exist"):
        run_build(spark, config_from_dict(_config(corpus, store=Path(store.root))),
                  version="bad2", base="nope")
    full = tiny_config(corpus, store=Path(store.root) / "other")
    run_build(spark, config_from_dict(full), version="plain")
    with pytest.raises(ConfigError, match="without \\[index\\] keep_scores = true"):
        run_build(spark, config_from_dict(full), version="bad3", base="plain")
    assert "bad1" not in store.list_versions() and "bad2" not in store.list_versions()
