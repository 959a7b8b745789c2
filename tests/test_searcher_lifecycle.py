"""The Searcher's life in a service: the parameters an explicit method runs at, queries of a
batch scored together with the same answers as alone, refresh under load (every answer whole
from one version), a corrupt version refused while the old one answers, following CURRENT with
a back-off, close and repr. Versions built with Spark (``serve_support``); the follower's and the
batcher's rules also on their own, without Spark."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from curindex.errors import IntegrityError
from curindex.ops.publish import publish_version, rollback
from curindex.scoring.base import score_pairs
from curindex.search import Searcher
from curindex.search.follow import POINTER, Follower
from curindex.search.methods import SearchSpec
from curindex.store import Store
from serve_support import PREFIX, QUERIES, ROUNDS, SCORER_TARGET, store_copy


@pytest.fixture(scope="module")
def uri(spark, tmp_path_factory) -> str:
    return store_copy(spark, tmp_path_factory, "lifecycle")


def open_at(uri: str, version: str = "current") -> Searcher:
    return Searcher.open(uri, version, scorer_target=SCORER_TARGET)


@pytest.fixture(scope="module")
def reference(uri) -> dict:
    """Per version, per (query, method): the answer of a Searcher opened on that version
    alone and asked one query at a time."""
    out = {}
    for v in PREFIX:
        with open_at(uri, v) as s:
            for q in QUERIES:
                for method in (None, "adaptive"):
                    (r,) = s.search([q], k=5, budget=30, method=method)
                    out[v, q, method] = (r.ids, r.scores)
    return out


def same(result, want) -> bool:
    ids, scores = want
    return result.ids == ids and np.array_equal(result.scores, scores)


@pytest.mark.spark
def test_a_method_named_alone_runs_at_the_parameters_its_build_validated(uri):
    with open_at(uri, "va") as s:
        recorded = {m.method: m.rounds for m in s.manifest.search.methods}
        assert recorded["adaptive"] == ROUNDS != 4 and s.served.method != "adaptive"
        assert s.spec(method="adaptive") == SearchSpec("adaptive", ROUNDS)
        (r,) = s.search(["river data"], k=5, budget=30, method="adaptive")
        assert r.method == f"adaptive ({ROUNDS} rounds)"
        (explicit,) = s.search(["river data"], k=5, budget=30, method="adaptive",
                               rounds=ROUNDS)
        assert r.ids == explicit.ids and np.array_equal(r.scores, explicit.scores)


@pytest.mark.spark
@pytest.mark.parametrize("method", [None, "adaptive"])
def test_a_batch_of_queries_shares_scorer_calls_and_answers_as_one_query_at_a_time(
        uri, reference, method):
    """One score_pairs call per round for the whole batch, and every answer the same ids and
    scores as the query searched alone."""
    with open_at(uri, "va") as s:
        calls = []
        inner = s.scorer.inner

        class Spy:  # the real scorer, its calls recorded
            fingerprint = inner.fingerprint

            def score_block(self, queries, items):
                calls.append(("block", len(set(queries))))
                return inner.score_block(queries, items)

            def score_pairs(self, queries, items):
                calls.append(("pairs", len(set(queries))))
                return score_pairs(inner, queries, items, where="spy")

        s.scorer.inner = Spy()
        got = s.search(QUERIES, k=5, budget=30, method=method)
    rounds = ROUNDS if method == "adaptive" else 1
    assert calls == [("block", len(QUERIES))] + [("pairs", len(QUERIES))] * rounds
    for q, r in zip(QUERIES, got, strict=True):
        assert r.version == "va" and same(r, reference["va", q, method]), q


@pytest.mark.spark
def test_searches_from_threads_during_refreshes_each_answer_from_one_whole_version(
        uri, reference):
    store = Store.open(uri)
    assert store.current() == "va"
    errors, answers = [], []
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            q, method = rng.choice(QUERIES), rng.choice([None, "adaptive"])
            try:
                (r,) = searcher.search([q], k=5, budget=30, method=method)
                answers.append((q, method, r))
            except Exception as e:  # any error fails the test below
                errors.append(e)

    with open_at(uri) as searcher:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        served = []
        for _ in range(3):  # publish, roll back, by refresh() and by following CURRENT
            publish_version(store, "vb")
            served.append(searcher.refresh())
            rollback(store)
            served.append(searcher.refresh())
        follower = searcher.follow(every_s=0.05)
        for target in ("vb", "va"):
            publish_version(store, target)
            deadline = time.monotonic() + 30
            while searcher.version != target and time.monotonic() < deadline:
                time.sleep(0.02)
            served.append(searcher.version)
        follower.stop()
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert served == ["vb", "va"] * 4
    assert {r.version for _, _, r in answers} == {"va", "vb"}
    for q, method, r in answers:
        assert all(i.startswith(PREFIX[r.version]) for i in r.ids)
        assert same(r, reference[r.version, q, method]), (r.version, q, method)


@pytest.mark.spark
def test_a_corrupt_version_is_refused_and_the_old_one_keeps_answering(uri, reference):
    store = Store.open(uri)
    publish_version(store, "va")
    shard = Path(uri) / "versions" / "vb" / store.read_manifest("vb")["index"]["shards"][0][
        "index"]
    good = shard.read_bytes()
    failures = []
    with open_at(uri) as searcher:
        publish_version(store, "vb")  # verified here, corrupted below
        try:
            shard.write_bytes(good[:-8] + bytes(8 * [0xFF]))
            with pytest.raises(IntegrityError, match="shard"):
                searcher.refresh()
            assert searcher.version == "va"
            # the follower tries it, then backs off (0.1 s, 0.2 s, ...) instead of re-hashing
            # it every 0.05 s
            follower = searcher.follow(every_s=0.05, max_backoff_s=60,
                                       on_failure=lambda v, e: failures.append((v, type(e))))
            time.sleep(1.0)
            (r,) = searcher.search(["river data"], k=5, budget=30)
            assert r.version == "va" and same(r, reference["va", "river data", None])
            rollback(store)  # CURRENT names the version serving again: nothing to do
            time.sleep(0.3)
            follower.stop()
        finally:
            shard.write_bytes(good)
        assert 1 <= len(failures) <= 5 and set(failures) == {("vb", IntegrityError)}
        assert searcher.version == "va"


@pytest.mark.spark
def test_close_repr_and_the_context_manager(uri):
    with open_at(uri, "va") as s:
        text = repr(s)
        for part in (uri, "'va'", "cur at budget", "callable", s.scorer.fingerprint):
            assert part in text
    assert repr(s) == "Searcher(closed)"
    with pytest.raises(RuntimeError, match="closed"):
        s.search(["river"], k=2, budget=30)
    s.close()  # twice: harmless


# --- the follower's rules, with a fake store and clock ----------------------------------------

class FakeStore:
    def __init__(self) -> None:
        self.current, self.serving, self.broken, self.down = "v1", "v1", set(), False
        self.tries: list[str] = []
        self.now = 0.0

    def read_current(self) -> str:
        if self.down:
            raise OSError("store unreachable")
        return self.current

    def refresh(self, version: str) -> str:
        self.tries.append(version)
        if version in self.broken:
            raise IntegrityError(f"version {version} is corrupt")
        self.serving = version
        return version


def test_the_follower_backs_off_a_failing_version_and_takes_the_next_publish_at_once():
    f = FakeStore()
    failed = []
    follower = Follower(current=f.read_current, serving=lambda: f.serving, refresh=f.refresh,
                        every_s=1.0, max_backoff_s=8.0, on_failure=lambda v, e: failed.append(v),
                        clock=lambda: f.now)
    assert follower.poll() is None and f.tries == []  # nothing new
    f.current, f.broken = "v2", {"v2"}
    retries = []
    for t in range(40):  # one poll a second: tried at 0, then after 2, 4, 8, 8 ... seconds
        f.now = float(t)
        follower.poll()
        retries.append(len(f.tries))
    tried_at = [t for t in range(40) if retries[t] > (retries[t - 1] if t else 0)]
    assert tried_at == [0, 2, 6, 14, 22, 30, 38]
    assert failed == ["v2"] * len(tried_at)
    f.current = "v3"  # a new publish: tried at once
    assert follower.poll() == "v3" and f.serving == "v3"
    f.down = True  # an unreadable pointer backs off too
    for t in (41, 42, 43, 44):
        f.now = float(t)
        follower.poll()
    assert failed[-2:] == [POINTER, POINTER]  # at 41, then at 43 (2 s later)
    f.down, f.current, f.now = False, "v1", 60.0
    assert follower.poll() == "v1" and f.serving == "v1"
