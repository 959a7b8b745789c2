"""The Spark side of the build kinds (``curindex.kinds``): what differs between a dense CUR
build and a sparse build, behind one small interface, one module per kind. The stages stay
one list (``curindex.pipeline.stages``); each asks the config's kind for its part:

- ``DEFINING_FILES``: the small files of a version that define its projection (an incremental
  build copies them from its base);
- ``choose(ctx, items, queries, n_items, n_queries) -> Anchors`` (prepare): which queries
  train, which test, which items anchor;
- ``scored_queries(ctx, anchors)`` (score): the queries every item is scored against;
- ``score_more(ctx) -> dict`` (score): exact scores beyond those (the sparse build's pairs);
- ``factorize(ctx) -> (state, files)``: fit what turns an item's row into its vectors;
- ``features(ctx) -> curindex.kinds.Features`` (write_shards, validate): that function;
- ``query_side(ctx, anchors, bi_test) -> QuerySide`` (validate): what a test query's search
  rounds start from.
"""

from __future__ import annotations

from types import ModuleType

from curindex.config import BuildConfig
from curindex.pipeline.kinds.base import QuerySide

__all__ = ["QuerySide", "kind_for"]


def kind_for(cfg: BuildConfig) -> ModuleType:
    """The module of the config's build kind (`curindex.pipeline.kinds.dense` or `.sparse`)."""
    from curindex.pipeline.kinds import dense, sparse

    return {"dense": dense, "sparse": sparse}[cfg.index.kind]
