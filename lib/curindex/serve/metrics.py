"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own so that several
apps in one process keep theirs apart.

    curindex_request_duration_seconds{route}   histogram of HTTP request latency
    curindex_requests_total{route,status}      HTTP requests answered, by status code
    curindex_errors_total{error}               error answers, by error name (invalid_request, ...)
    curindex_queries_total                     queries answered
    curindex_model_calls_total                 exact-model calls spent on them
    curindex_batch_queries                     histogram of queries per search call (batching)
    curindex_refresh_failures_total            versions a refresh or a poll refused
    curindex_serving_info{store,version}       the version serving (value 1)
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)

# Seconds: a query's latency is mostly its exact-model calls, from milliseconds to a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
                   120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ROUTES = ("/search", "/healthz", "/version", "/metrics", "/refresh")  # others: "other"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.latency = Histogram("curindex_request_duration_seconds",
                                 "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("curindex_requests", "HTTP requests answered",
                                ["route", "status"], registry=r)
        self.errors = Counter("curindex_errors", "error answers by error name", ["error"],
                              registry=r)
        self.queries = Counter("curindex_queries", "queries answered", registry=r)
        self.model_calls = Counter("curindex_model_calls",
                                   "exact-model calls spent on the queries answered", registry=r)
        self.batch = Histogram("curindex_batch_queries",
                               "queries per search call (concurrent requests batched)",
                               buckets=BATCH_BUCKETS, registry=r)
        self.refresh_failures = Counter("curindex_refresh_failures",
                                        "versions a refresh or a poll of CURRENT refused",
                                        registry=r)
        self.serving = Info("curindex_serving", "the version serving", registry=r)

    def observe(self, route: str, status: int, seconds: float) -> None:
        route = route if route in ROUTES else "other"  # bounded label values
        self.latency.labels(route).observe(seconds)
        self.requests.labels(route, str(status)).inc()

    def render(self, *, store: str, version: str) -> tuple[bytes, str]:
        """The metrics as Prometheus text, and its content type."""
        self.serving.info({"store": store, "version": version})
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
