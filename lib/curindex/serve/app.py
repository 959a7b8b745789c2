"""The HTTP API of ``curindex serve``: a Searcher behind FastAPI, concurrent searches batched
(``curindex.serve.batcher``), the store's CURRENT polled (``Searcher.follow``).

    POST /search    {"queries": ["..."], "k": 10, "budget": 200, "method": null, "texts": false}
                    -> {"version", "method", "model_calls", "results": [{"query",
                        "model_calls", "items": [{"id", "score", "text"?}]}]}
    GET  /healthz   200 {"status": "ok", "version"} while a version serves
    GET  /version   the version serving: store, created_at, served search, scorer, methods
    GET  /metrics   Prometheus text (``curindex.serve.metrics``)
    POST /refresh   serve the version CURRENT names now -> {"version", "previous", "changed"}

Every answer of a request comes from one version, named in it. Errors are JSON
``{"error": NAME, "detail": TEXT}``: 400 ``invalid_request`` (malformed JSON, a missing, unknown
or mistyped field, an empty query), 422 ``budget_over_cap`` (over the server's max_budget),
422 ``search_refused`` (the version cannot run that search: a method without its indexes, a
budget not above its anchor items), 500 ``model_failure`` (the scorer failed: the server goes
on serving), 500 ``search_failed`` (any other failure), 500 ``refresh_failed`` (the version
serving keeps serving), 503 ``unavailable`` (the searcher is closed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from curindex import __version__
from curindex.errors import ScorerError
from curindex.search.methods import NEEDS
from curindex.search.searcher import Searcher
from curindex.search.version import OpenVersion, SearchResult
from curindex.serve.batcher import Batcher, How
from curindex.serve.metrics import Metrics

log = logging.getLogger("curindex.serve")

MAX_REQUEST_QUERIES = 256  # queries in one request
MAX_QUERY_CHARS = 10_000  # characters of one query (scorers read a few dozen tokens of it)
MAX_K = 1_000


class SearchRequest(BaseModel):
    """A search: the queries, and how (the version's served search when nothing else is said)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    queries: list[Annotated[str, StringConstraints(max_length=MAX_QUERY_CHARS)]] = Field(
        min_length=1, max_length=MAX_REQUEST_QUERIES)
    k: int = Field(10, ge=1, le=MAX_K, description="results per query")
    budget: int | None = Field(None, ge=1, description="exact-model calls per query (default: "
                                                       "the version's served budget)")
    method: Literal["cur", "adaptive", "bi-seeded", "bi-rerank"] | None = Field(
        None, description="default: the version's served search; a method named alone runs "
                          "at the parameters the build validated it at")
    texts: bool = Field(False, description="also return each item's text")

    @field_validator("queries")
    @classmethod
    def _no_empty_query(cls, queries: list[str]) -> list[str]:
        for i, q in enumerate(queries):
            if not q.strip():
                raise ValueError(f"query {i} is empty; every query needs text")
        return queries


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def create_app(searcher: Searcher, *, poll_s: float | None = 5.0,
               max_batch_queries: int = 64) -> FastAPI:
    """The app serving `searcher`. While it runs (its lifespan), the store's CURRENT is polled
    every `poll_s` seconds (None or 0: only on ``POST /refresh``), and requests waiting
    together are answered by one search call of at most `max_batch_queries` queries. The
    caller keeps `searcher` and closes it after the app stops."""
    metrics = Metrics()
    batcher = Batcher(lambda queries, k, how: searcher.search(
        queries, k=k, budget=how.budget, method=how.method),
        max_queries=max_batch_queries, on_batch=metrics.batch.observe)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        follower = None
        if poll_s:
            follower = searcher.follow(every_s=poll_s,
                                       on_failure=lambda what, e: metrics.refresh_failures.inc())
        try:
            yield
        finally:
            if follower is not None:
                follower.stop()
            await batcher.stop()

    app = FastAPI(title="curindex", version=__version__, lifespan=lifespan,
                  summary="Top-k search of a published curindex version")
    app.state.searcher, app.state.metrics = searcher, metrics

    @app.middleware("http")
    async def timed(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        metrics.observe(request.url.path, response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _problems(exc.errors())
        if "json" not in request.headers.get("content-type", ""):
            # unread: a body without this header is never taken as JSON (CSRF from browsers)
            detail = ("the body must be JSON sent with Content-Type: application/json (got "
                      f"{request.headers.get('content-type') or 'no Content-Type'})")
        return _error(metrics, ApiError(400, "invalid_request", detail))

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        return _error(metrics, exc)

    @app.post("/search")
    async def search(body: SearchRequest) -> dict[str, Any]:
        """Top-k items per query by exact score, from the version serving."""
        state = _serving(searcher)
        if body.budget is not None and body.budget > state.max_budget:
            raise ApiError(422, "budget_over_cap",
                           f"budget {body.budget} is over this server's max_budget "
                           f"{state.max_budget} (exact-model calls per query)")
        how = How(body.budget, body.method)
        try:
            state.checked(body.queries, k=body.k, budget=how.budget, method=how.method)
            results = await batcher.search(body.queries, k=body.k, how=how)
        except (ValueError, TypeError) as e:  # checked, or refused by a version swapped in
            raise ApiError(422, "search_refused", str(e)) from e
        except ScorerError as e:
            log.error("model failure: %s", e)
            raise ApiError(500, "model_failure", str(e)) from e
        except Exception as e:
            log.exception("search failed")
            raise ApiError(500, "search_failed", f"{type(e).__name__}: {e}") from e
        metrics.queries.inc(len(results))
        metrics.model_calls.inc(sum(r.model_calls for r in results))
        return _answer(results, texts=body.texts)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": _serving(searcher).version}

    @app.get("/version")
    async def version() -> dict[str, Any]:
        return version_doc(_serving(searcher))

    @app.get("/metrics")
    async def prometheus() -> Response:
        state = _serving(searcher)
        text, media_type = metrics.render(store=state.store.uri if state.store else "",
                                          version=state.version)
        return Response(text, media_type=media_type)

    @app.post("/refresh")
    async def refresh() -> dict[str, Any]:
        """Serve the version the store's CURRENT names now (polled every few seconds too)."""
        before = _serving(searcher).version
        try:
            now = await anyio.to_thread.run_sync(searcher.refresh)
        except Exception as e:
            metrics.refresh_failures.inc()
            raise ApiError(500, "refresh_failed", f"{type(e).__name__}: {e} (version "
                                                  f"{searcher.version} keeps serving)") from e
        return {"version": now, "previous": before, "changed": now != before}

    return app


def version_doc(state: OpenVersion) -> dict[str, Any]:
    """What ``GET /version`` says of a version."""
    s, m = state.served, state.manifest
    return {
        "store": state.store.uri if state.store else None, "version": state.version,
        "created_at": m.created_at if m else None,
        "served": {"method": s.method, "rounds": s.rounds, "seed": s.seed,
                   "seed_size": s.seed_size, "budget": s.budget,
                   "describe": state.spec().describe()},
        "scorer": {"kind": m.scorer.kind if m else None,
                   "fingerprint": state.scorer.fingerprint},
        "methods": [name for name, needs in NEEDS.items()
                    if all(state.shards.has(n) for n in needs)],
        "n_items": state.n_items, "n_anchor_items": len(state.anchor_ids),
        "max_budget": state.max_budget,
    }


def _serving(searcher: Searcher) -> OpenVersion:
    try:
        return searcher.current
    except RuntimeError as e:
        raise ApiError(503, "unavailable", str(e)) from e


def _answer(results: list[SearchResult], *, texts: bool) -> dict[str, Any]:
    return {
        "version": results[0].version, "method": results[0].method,
        "model_calls": sum(r.model_calls for r in results),
        "results": [{"query": r.query, "model_calls": r.model_calls,
                     "items": [{"id": i, "score": float(s), **({"text": t} if texts else {})}
                               for i, s, t in zip(r.ids, r.scores, r.texts, strict=True)]}
                    for r in results],
    }


def _problems(errors: Any) -> str:
    """Pydantic's validation errors as one line: ``field: problem; ...``."""
    out = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ())[1:]) or "body"
        if e.get("type") == "json_invalid":  # loc holds the character offset
            where = f"body (character {where})"
        why = (e.get("ctx") or {}).get("error") if e.get("type") == "json_invalid" else None
        out.append(f"{where}: {e.get('msg', 'invalid')}" + (f" ({why})" if why else ""))
    return "; ".join(out)


def _error(metrics: Metrics, e: ApiError) -> JSONResponse:
    metrics.errors.labels(e.error).inc()
    return JSONResponse({"error": e.error, "detail": e.detail}, status_code=e.status)
