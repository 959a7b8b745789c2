"""`curindex serve` over real HTTP: a real uvicorn server on 127.0.0.1 (in a thread, and the CLI
in a subprocess) called with httpx. Answers equal the in-process Searcher's; concurrent requests
share search calls; bad requests get 4xx naming the problem; a model failure is a 500 and the
server goes on; publishes are followed. The batcher's grouping rules also on their own."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from curindex.ops.publish import publish_version, rollback
from curindex.search import Searcher
from curindex.search.version import SearchResult
from curindex.serve.app import create_app
from curindex.serve.batcher import How, Request, split, take_batch
from curindex.store import Store
from serve_support import QUERIES, ROUNDS, SCORER_TARGET, store_copy

MAX_BUDGET = 100


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """uvicorn serving `app` on a free port of 127.0.0.1 in a thread: its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def srv(spark, tmp_path_factory):
    uri = store_copy(spark, tmp_path_factory, "serve")
    searcher = Searcher.open(uri, scorer_target=SCORER_TARGET, max_budget=MAX_BUDGET)
    with running(create_app(searcher, poll_s=0.1)) as base, \
            httpx.Client(base_url=base, timeout=120) as client:
        yield SimpleNamespace(uri=uri, searcher=searcher, client=client)
    searcher.close()


def reference(uri: str, version: str, queries: list[str], **how) -> list[SearchResult]:
    with Searcher.open(uri, version, scorer_target=SCORER_TARGET) as s:
        return s.search(queries, **how)


def assert_answers(doc: dict, want: list[SearchResult], *, texts: bool = False) -> None:
    assert [r["query"] for r in doc["results"]] == [w.query for w in want]
    for got, w in zip(doc["results"], want, strict=True):
        assert [i["id"] for i in got["items"]] == w.ids
        assert np.array_equal(np.float32([i["score"] for i in got["items"]]), w.scores)
        assert got["model_calls"] == w.model_calls
        if texts:
            assert [i["text"] for i in got["items"]] == w.texts
    assert doc["version"] == want[0].version and doc["method"] == want[0].method
    assert doc["model_calls"] == sum(w.model_calls for w in want)


def metric(client: httpx.Client, name: str, **labels) -> float:
    """A sample of GET /metrics, read with Prometheus' own parser (0 when absent)."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.mark.spark
@pytest.mark.parametrize("how", [{}, {"method": "adaptive"}, {"texts": True}])
def test_search_answers_as_the_searcher_does(srv, how):
    body = {"queries": QUERIES[:3], "k": 5, "budget": 30, **how}
    calls_before = metric(srv.client, "curindex_model_calls_total")
    r = srv.client.post("/search", json=body)
    assert r.status_code == 200, r.text
    want = reference(srv.uri, "va", QUERIES[:3], k=5, budget=30, method=how.get("method"))
    assert_answers(r.json(), want, texts=how.get("texts", False))
    assert r.json()["method"] == (f"adaptive ({ROUNDS} rounds)" if how.get("method") else "cur")
    assert metric(srv.client, "curindex_model_calls_total") - calls_before == 3 * 30


@pytest.mark.spark
def test_health_version_and_metrics(srv):
    assert srv.client.get("/healthz").json() == {"status": "ok", "version": "va"}
    doc = srv.client.get("/version").json()
    assert doc["version"] == "va" and doc["store"] == srv.uri and doc["max_budget"] == MAX_BUDGET
    assert doc["served"]["method"] == "cur" and doc["methods"] == ["cur", "adaptive"]
    assert doc["scorer"] == {"kind": "callable", "fingerprint": srv.searcher.scorer.fingerprint}
    assert metric(srv.client, "curindex_serving_info", version="va", store=srv.uri) == 1.0
    before = metric(srv.client, "curindex_request_duration_seconds_count", route="/healthz")
    srv.client.get("/healthz")
    assert metric(srv.client, "curindex_request_duration_seconds_count",
                  route="/healthz") == before + 1


@pytest.mark.spark
@pytest.mark.parametrize("body, status, error, fragment", [
    (b'{"queries": ["river"', 400, "invalid_request", "JSON decode error"),
    ({"queries": []}, 400, "invalid_request", "queries"),
    ({"queries": ["river", "  "]}, 400, "invalid_request", "query 1 is empty"),
    ({"queries": "river"}, 400, "invalid_request", "queries"),
    ({"k": 5}, 400, "invalid_request", "queries: Field required"),
    ({"queries": ["river"], "k": 0}, 400, "invalid_request", "k:"),
    ({"queries": ["river"], "k": "5"}, 400, "invalid_request", "k:"),
    ({"queries": ["river"], "method": "magic"}, 400, "invalid_request", "method:"),
    ({"queries": ["river"], "extra": 1}, 400, "invalid_request", "extra"),
    ({"queries": ["river"], "budget": MAX_BUDGET + 1}, 422, "budget_over_cap",
     f"max_budget {MAX_BUDGET}"),
    ({"queries": ["river"], "budget": 12}, 422, "search_refused", "anchor items"),
    ({"queries": ["river"], "method": "bi-rerank"}, 422, "search_refused", "'bi' shards"),
])
def test_a_bad_request_gets_a_4xx_naming_the_problem(srv, body, status, error, fragment):
    before = metric(srv.client, "curindex_errors_total", error=error)
    r = (srv.client.post("/search", content=body, headers={"content-type": "application/json"})
         if isinstance(body, bytes) else srv.client.post("/search", json=body))
    assert r.status_code == status and r.json()["error"] == error, r.text
    assert fragment in r.json()["detail"]
    assert metric(srv.client, "curindex_errors_total", error=error) == before + 1


@pytest.mark.spark
def test_a_body_that_is_not_declared_json_is_refused(srv):
    r = srv.client.post("/search", content=b'{"queries": ["river"]}')
    assert r.status_code == 400 and "Content-Type: application/json" in r.json()["detail"]


@pytest.mark.spark
def test_a_model_failure_is_a_500_and_only_its_own_request_fails(srv):
    r = srv.client.post("/search", json={"queries": ["explode river"], "budget": 30})
    assert r.status_code == 500 and r.json()["error"] == "model_failure", r.text
    assert "explode river" in r.json()["detail"]
    # together with good requests (batched, then run alone after the failure)
    bodies = [{"queries": ["explode data"]}, *({"queries": [q]} for q in QUERIES[:3])]
    answers = [None] * len(bodies)

    def send(i: int) -> None:
        answers[i] = srv.client.post("/search", json={**bodies[i], "k": 5, "budget": 30})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [500, 200, 200, 200]
    for a, q in zip(answers[1:], QUERIES[:3], strict=True):
        assert_answers(a.json(), reference(srv.uri, "va", [q], k=5, budget=30))
    assert srv.client.get("/healthz").status_code == 200


@pytest.mark.spark
def test_concurrent_requests_share_search_calls(srv, monkeypatch):
    """While a search runs (each scorer block slowed to 0.2 s), the requests arriving wait and
    then go together: far fewer search calls than requests, every answer as alone."""
    monkeypatch.setenv("CURINDEX_TEST_SCORER_DELAY_S", "0.2")
    calls = metric(srv.client, "curindex_batch_queries_count")
    queries = metric(srv.client, "curindex_batch_queries_sum")
    n = 8
    answers = [None] * n
    barrier = threading.Barrier(n)

    def send(i: int) -> None:
        barrier.wait()
        answers[i] = srv.client.post("/search", json={"queries": [QUERIES[i % len(QUERIES)]],
                                                      "k": 5, "budget": 30})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.delenv("CURINDEX_TEST_SCORER_DELAY_S")
    assert all(a.status_code == 200 for a in answers)
    assert metric(srv.client, "curindex_batch_queries_sum") - queries == n
    assert metric(srv.client, "curindex_batch_queries_count") - calls <= 3
    want = reference(srv.uri, "va", QUERIES, k=5, budget=30)
    for i, a in enumerate(answers):
        assert_answers(a.json(), [want[i % len(QUERIES)]])


@pytest.mark.spark
def test_publishes_are_followed_and_a_corrupt_one_refused(srv):
    store = Store.open(srv.uri)
    publish_version(store, "vb")
    assert srv.client.post("/refresh").json()["version"] == "vb"
    r = srv.client.post("/search", json={"queries": QUERIES[:2], "k": 5, "budget": 30})
    assert_answers(r.json(), reference(srv.uri, "vb", QUERIES[:2], k=5, budget=30))
    rollback(store)  # the poll (every 0.1 s) follows it
    deadline = time.monotonic() + 30
    while srv.client.get("/healthz").json()["version"] != "va":
        assert time.monotonic() < deadline, "the rollback was not followed"
        time.sleep(0.05)
    # a published version corrupted afterwards: refused, "va" goes on answering
    publish_version(store, "vb")
    shard = Path(srv.uri) / "versions" / "vb" / store.read_manifest("vb")["index"]["shards"][0][
        "index"]
    good = shard.read_bytes()
    try:
        shard.write_bytes(good[:-8] + bytes(8 * [0xFF]))
        r = srv.client.post("/refresh")
        assert r.status_code == 500 and r.json()["error"] == "refresh_failed", r.text
        assert "IntegrityError" in r.json()["detail"] and "va keeps serving" in r.json()["detail"]
        r = srv.client.post("/search", json={"queries": QUERIES[:1], "k": 5, "budget": 30})
        assert r.status_code == 200 and r.json()["version"] == "va"
        assert metric(srv.client, "curindex_refresh_failures_total") >= 1
    finally:
        shard.write_bytes(good)
        rollback(store)


@pytest.mark.spark
def test_the_cli_serves_and_stops_on_sigterm(srv):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "curindex", "serve", "--store", srv.uri, "--port", str(port),
         "--poll-s", "0", "--scorer-target", SCORER_TARGET],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "curindex serve did not answer"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            time.sleep(0.2)
        r = httpx.post(f"{base}/search", json={"queries": QUERIES[:1], "k": 5, "budget": 30},
                       timeout=60)
        assert_answers(r.json(), reference(srv.uri, "va", QUERIES[:1], k=5, budget=30))
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    # uvicorn answers what is under way, runs the app's shutdown, then ends by the signal
    assert proc.returncode == -signal.SIGTERM, out
    assert "serving Searcher(store=" in out and "Application shutdown complete" in out, out


def test_batches_take_requests_of_one_kind_in_arrival_order_within_the_cap():
    a, b = How(30, None), How(30, "adaptive")
    pending = [Request(q, k, how, future=None) for q, k, how in [
        (["q1"], 3, a), (["q2", "q3"], 5, b), (["q4", "q5"], 2, a), (["q6"] * 3, 1, a),
        (["q7"], 1, a)]]
    first = take_batch(pending, max_queries=4)
    assert [r.queries for r in first] == [["q1"], ["q4", "q5"], ["q7"]]
    assert [r.queries[0] for r in pending] == ["q2", "q6"]
    assert [r.queries for r in take_batch(pending, max_queries=1)] == [["q2", "q3"]]
    results = [SearchResult(q, [f"{q}-{j}" for j in range(5)],
                            np.arange(5, 0, -1, dtype=np.float32), [""] * 5, 7)
               for q in ("q1", "q4", "q5", "q7")]
    parts = split(results, first)
    assert [[r.ids for r in p] for p in parts] == [
        [["q1-0", "q1-1", "q1-2"]], [["q4-0", "q4-1"], ["q5-0", "q5-1"]], [["q7-0"]]]
    assert list(parts[0][0].scores) == [5.0, 4.0, 3.0]

