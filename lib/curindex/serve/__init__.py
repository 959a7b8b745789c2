"""Serving a store over HTTP (``curindex serve``): the FastAPI app (``app``), the batching of
concurrent searches (``batcher``) and the Prometheus metrics (``metrics``). Needs the ``serve``
extra: ``pip install 'curindex[serve]'``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curindex.search.searcher import Searcher


def run(searcher: Searcher, *, host: str = "127.0.0.1", port: int = 8080,
        poll_s: float | None = 5.0, max_batch_queries: int = 64,
        log_level: str = "info") -> None:
    """Serve `searcher` with uvicorn until SIGINT or SIGTERM (requests under way are answered
    first); see ``curindex.serve.app.create_app`` for `poll_s` and `max_batch_queries`."""
    import uvicorn

    from curindex.serve.app import create_app

    uvicorn.run(create_app(searcher, poll_s=poll_s, max_batch_queries=max_batch_queries),
                host=host, port=port, log_level=log_level)
