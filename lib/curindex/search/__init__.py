"""Query time: the Searcher over a store's serving version, refreshed as the store publishes
(``searcher``; ``follow`` polls CURRENT), one version opened for search (``version``), which
scorer a manifest may name (``trust``), the search methods, pure numpy (``methods``), a
version's shards opened for reading (``reader``), and the faiss shard layout (``shardindex``).

``from curindex.search import Searcher`` imports the Searcher on first use, so that importing
``curindex.search.methods`` does not load faiss and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curindex.search.searcher import (
        DEFAULT_MAX_BUDGET,
        LEGACY_SEARCH,
        OpenVersion,
        Searcher,
        SearchResult,
        trusted_scorer_config,
    )

_LAZY = ("DEFAULT_MAX_BUDGET", "LEGACY_SEARCH", "OpenVersion", "SearchResult", "Searcher",
         "trusted_scorer_config")
__all__ = ["DEFAULT_MAX_BUDGET", "LEGACY_SEARCH", "OpenVersion", "SearchResult", "Searcher",
           "trusted_scorer_config"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'curindex.search.searcher' has no attribute {name!r}")
    value = getattr(importlib.import_module("curindex.search.searcher"), name)
    globals()[name] = value
    return value
