"""Serving: `curindex serve` over HTTP at 1, 8 and 32 concurrent clients, beside the in-process
Searcher (one query alone; a batch of 32 in one call), on the demo index at its served budget.

    make demo                        # builds and publishes ./store (maxsim-minilm scorer)
    .venv/bin/python bench/serve.py  # then this
    .venv/bin/python bench/serve.py --store S --single 6 --batch 32 --clients 8,32

The server is `curindex serve` in a subprocess (its own process, as deployed: the clients'
Python does not share its interpreter); each client sends one query per request, its next
request when the last is answered; queries are the demo's. The comparisons are of the same
queries, side by side in time, so that neither a query's own cost (the length of the items it
retrieves) nor the load of a shared machine favours one side: each single query runs in the
in-process Searcher and through one HTTP client one after the other (in turns, which first);
the in-process batch of 32 is followed at once by the same 32 queries from 8 clients (4 each)
and from 32 clients (1 each). (The server keeps the queries' MaxSim token embeddings between
the two client levels: 32 query encodings against 6,400 item encodings.)

Prints one JSON object:

- ``in_process.single``: `Searcher.search([q])`, one query at a time: p50/p99 seconds, pairs/s
  (exact-model pairs per second); ``in_process.breakdown``: where a query's time goes (the
  exact-model calls, and of them MaxSim's encoding of the texts; the query's bi-encoder
  embedding; the rest: faiss and ranking);
- ``in_process.batch``: one `Searcher.search` of 32 queries: seconds, queries/s, pairs/s;
- ``http["N"]``: N clients: p50/p99 request latency, queries/s, pairs/s, and the server's search
  calls and mean queries per call (from its /metrics);
- ``ratios``: HTTP pairs/s at 8 and 32 clients over the in-process batch (target >= 0.8), HTTP
  p50 at 1 client over the in-process single query (target <= 1.2);
- ``load_1m``: the machine's load average when the run started and ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def demo_queries() -> list[str]:
    from curindex.inputs.demo import queries_table

    texts = queries_table()[1]
    return list(np.random.default_rng(0).permutation(texts))


class Timed:
    """A scorer (or bi-encoder) whose calls are timed: seconds per method name."""

    def __init__(self, inner, names: tuple[str, ...]) -> None:
        self.inner, self.seconds = inner, dict.fromkeys(names, 0.0)
        self.fingerprint = getattr(inner, "fingerprint", "")
        for name in names:
            setattr(self, name, self._timed(name))

    def _timed(self, name: str):
        fn = getattr(self.inner, name)

        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return call


class InProcess:
    """The in-process Searcher, its scorer and bi-encoder timed (for the breakdown)."""

    def __init__(self, store: str, warm_up: str, budget: int) -> None:
        from curindex.scoring import biencoder
        from curindex.search import Searcher

        self.budget = budget
        self.searcher = Searcher.open(store)
        self.searcher.search([warm_up], budget=budget)  # first calls allocate
        state = self.searcher.current
        inner = state.scorer.inner
        # MaxSim encodes texts apart from scoring them: how much of a call is encoding
        self.encode = Timed(inner, ("encode",)) if hasattr(inner, "encode") else None
        if self.encode is not None:
            inner.encode = self.encode.encode  # the instance's own attribute
        self.model = Timed(inner, ("score_block", "score_pairs"))
        state.scorer.inner = self.model
        bi = biencoder.get_biencoder()
        self.bi = Timed(bi, ("encode",))
        bi.encode = self.bi.encode  # the instance's own attribute: the class is untouched

    def timers(self) -> tuple[float, float, float | None]:
        """Seconds so far in exact-model calls, in bi-encoder calls, and of the model calls in
        encoding texts (MaxSim; None for other scorers)."""
        return (sum(self.model.seconds.values()), self.bi.seconds["encode"],
                self.encode.seconds["encode"] if self.encode is not None else None)

    def search(self, queries: list[str]) -> tuple[float, int]:
        """(seconds, exact-model calls) of one search call."""
        start = time.perf_counter()
        results = self.searcher.search(queries, budget=self.budget)
        return time.perf_counter() - start, sum(r.model_calls for r in results)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "curindex", "serve", "--store", store,
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"curindex serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("curindex serve did not answer in 300 s")


def batch_metrics(base: str) -> tuple[float, float]:
    """(search calls, queries searched) so far, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    got = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for s in family.samples:
            if s.name in ("curindex_batch_queries_count", "curindex_batch_queries_sum"):
                got[s.name] = s.value
    return got.get("curindex_batch_queries_count", 0.0), got.get("curindex_batch_queries_sum", 0.0)


async def clients(base: str, queries: list[str], n_clients: int, per_client: int,
                  budget: int) -> dict:
    latencies: list[float] = []
    calls = 0
    todo = iter(queries)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal calls
        for _ in range(per_client):
            start = time.perf_counter()
            r = await http.post("/search", json={"queries": [next(todo)], "budget": budget})
            latencies.append(time.perf_counter() - start)
            r.raise_for_status()
            calls += r.json()["model_calls"]

    limits = httpx.Limits(max_connections=n_clients)
    async with httpx.AsyncClient(base_url=base, timeout=3600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(n_clients)))
        wall = time.perf_counter() - start
    return {"requests": len(latencies), "p50_s": percentile(latencies, 50),
            "p99_s": percentile(latencies, 99), "queries_per_s": len(latencies) / wall,
            "pairs_per_s": calls / wall}


def http_level(base: str, queries: list[str], n_clients: int, per_client: int,
               budget: int) -> dict:
    """`n_clients` clients sending `per_client` requests each, and the server's batching."""
    calls0, queries0 = batch_metrics(base)
    doc = asyncio.run(clients(base, queries, n_clients, per_client, budget))
    calls1, queries1 = batch_metrics(base)
    return {**doc, "search_calls": calls1 - calls0,
            "queries_per_call": (queries1 - queries0) / max(calls1 - calls0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=str(ROOT / "store"))
    p.add_argument("--single", type=int, default=6,
                   help="single queries timed in process and through 1 HTTP client, in turn")
    p.add_argument("--batch", type=int, default=32,
                   help="queries of the in-process batch, and of each concurrent HTTP level")
    p.add_argument("--clients", default="8,32", help="concurrent HTTP client levels")
    args = p.parse_args()
    from curindex.errors import CurIndexError
    from curindex.manifest import read_manifest
    from curindex.store import Store

    try:
        store = Store.open(args.store)
        version = store.resolve("current")
    except CurIndexError as e:
        raise SystemExit(f"{e}\nbuild the demo index first: make demo (or `curindex build "
                         "--conf conf/demo.toml --publish`)") from None
    served = read_manifest(store, version).search.default
    levels = [int(c) for c in args.clients.split(",")]
    queries = iter(demo_queries())
    take = lambda n: [next(queries) for _ in range(n)]  # noqa: E731 - never a query twice
    out: dict = {"store": args.store, "version": version, "served": served.method,
                 "budget": served.budget, "cpus": os.cpu_count(),
                 "load_1m": {"start": os.getloadavg()[0]}}
    local = InProcess(args.store, take(1)[0], served.budget)
    port = free_port()
    proc = start_server(args.store, port)
    base = f"http://127.0.0.1:{port}"
    try:
        httpx.post(f"{base}/search", json={"queries": take(1)}, timeout=3600)  # warm-up
        # The same query alone in process and through HTTP, one after the other, in turns
        # (a query's cost depends on the length of the items it retrieves; the machine's load
        # changes within seconds)
        alone, http1, pairs = [], [], 0
        for i, q in enumerate(take(args.single)):
            for path in ("local", "http") if i % 2 == 0 else ("http", "local"):
                if path == "local":
                    seconds, calls = local.search([q])
                    alone.append(seconds)
                    pairs += calls
                else:
                    http1.append(asyncio.run(clients(base, [q], 1, 1, served.budget)))
        model_s, bi_s, encode_s = local.timers()
        total = sum(alone)
        out["in_process"] = {
            "single": {"n": len(alone), "p50_s": percentile(alone, 50),
                       "p99_s": percentile(alone, 99), "pairs_per_s": pairs / total},
            "breakdown": {"seconds_per_query": total / len(alone),
                          "exact_model_share": model_s / total, "biencoder_share": bi_s / total,
                          "faiss_and_rest_share": (total - model_s - bi_s) / total,
                          "model_encoding_share": None if encode_s is None else encode_s / total},
        }
        lat = [h["p50_s"] for h in http1]
        out["http"] = {"1": {"requests": len(lat), "p50_s": percentile(lat, 50),
                             "p99_s": percentile(lat, 99),
                             "pairs_per_s": sum(h["pairs_per_s"] * h["p50_s"] for h in http1)
                             / sum(lat)}}
        # a batch in one call, then the same queries from concurrent clients
        batch = take(args.batch)
        seconds, calls = local.search(batch)
        out["in_process"]["batch"] = {"queries": args.batch, "seconds": seconds,
                                      "queries_per_s": args.batch / seconds,
                                      "pairs_per_s": calls / seconds}
        for c in levels:
            per_client = max(1, args.batch // c)
            out["http"][str(c)] = http_level(base, batch[:c * per_client], c, per_client,
                                             served.budget)
    finally:
        proc.terminate()
        proc.wait(60)
        local.searcher.close()
    batch_rate = out["in_process"]["batch"]["pairs_per_s"]
    out["ratios"] = {
        **{f"http_pairs_per_s_{c}_over_batch": out["http"][str(c)]["pairs_per_s"] / batch_rate
           for c in levels},
        "http_p50_1_over_single": out["http"]["1"]["p50_s"] / out["in_process"]["single"]["p50_s"],
    }
    out["load_1m"]["end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
