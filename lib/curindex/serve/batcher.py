"""Batching concurrent searches: requests that arrive while a search runs wait, then go to the
model together.

One worker thread runs one search at a time. Whatever arrived meanwhile is taken at once:
requests with the same budget and method run as one ``search`` call over all their queries (at
the largest k asked; each answer is cut to its own k, which is the same answer: the top k are
the first k of the top K), so their exact-model calls share forward batches. No request waits
for others to arrive: alone, a request runs at once; under load, batches grow with the number
of requests waiting, and throughput with them. A request with more queries than `max_queries`
runs in a call of its own.

When a batched call fails, its requests run again one at a time, so that one query the model
fails on fails only its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from curindex.search.version import SearchResult


@dataclass(frozen=True)
class How:
    """What the queries of one search call share."""

    budget: int | None  # None: the serving version's served budget
    method: str | None  # None: the served search


@dataclass
class Request:
    queries: list[str]
    k: int
    how: How
    future: asyncio.Future = field(repr=False)


# Runs in the worker thread: (queries, k, how) -> one SearchResult per query.
SearchFn = Callable[[list[str], int, How], list[SearchResult]]


def take_batch(pending: list[Request], max_queries: int) -> list[Request]:
    """Remove from `pending` and return the next batch: the oldest request and, in arrival
    order, every later one with the same `how` while the batch holds at most `max_queries`
    queries (the oldest always goes, whatever its size)."""
    first = pending[0]
    batch, total, rest = [first], len(first.queries), []
    for r in pending[1:]:
        if r.how == first.how and total + len(r.queries) <= max_queries:
            batch.append(r)
            total += len(r.queries)
        else:
            rest.append(r)
    pending[:] = rest
    return batch


def split(results: list[SearchResult], batch: list[Request]) -> list[list[SearchResult]]:
    """The results of a batch's one search call, per request, each cut to its own k."""
    out, start = [], 0
    for r in batch:
        part = results[start:start + len(r.queries)]
        start += len(r.queries)
        out.append([dataclasses.replace(x, ids=x.ids[:r.k], scores=x.scores[:r.k],
                                        texts=x.texts[:r.k]) for x in part])
    return out


class Batcher:
    """Answers `search` requests from an asyncio event loop (see the module docstring);
    `on_batch(n_queries)` is called for each search call. Start and stop it on the loop."""

    def __init__(self, search: SearchFn, *, max_queries: int = 64,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}")
        self._search, self.max_queries, self._on_batch = search, max_queries, on_batch
        self._pending: list[Request] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="curindex-search")

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop taking batches; requests still waiting fail with RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for r in self._pending:
            if not r.future.done():
                r.future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def search(self, queries: list[str], *, k: int, how: How) -> list[SearchResult]:
        """The answers to one request, once a search call has run it."""
        if self._wake is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(Request(list(queries), k, how, future))
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = [r for r in take_batch(self._pending, self.max_queries)
                         if not r.future.done()]  # a client that hung up is not searched for
                if batch:
                    await self._run(batch)

    async def _run(self, batch: list[Request]) -> None:
        loop = asyncio.get_running_loop()
        queries = [q for r in batch for q in r.queries]
        try:
            results = await loop.run_in_executor(
                self._executor, self._call, queries, max(r.k for r in batch), batch[0].how)
        except Exception as e:
            if len(batch) == 1:
                _settle(batch[0].future, error=e)
                return
            for r in batch:  # alone, each request's failure is its own
                await self._run([r])
            return
        for r, part in zip(batch, split(results, batch), strict=True):
            _settle(r.future, result=part)

    def _call(self, queries: list[str], k: int, how: How) -> list[SearchResult]:
        if self._on_batch is not None:
            self._on_batch(len(queries))
        return self._search(queries, k, how)


def _settle(future: asyncio.Future, *, result: object = None,
            error: BaseException | None = None) -> None:
    if future.done():  # cancelled: the client hung up
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

