"""Factorize stage: what turns an item's score row into its vectors, fitted by the build kind
(``curindex.pipeline.kinds``: a dense build pseudo-inverts the anchor intersection matrix into
G; a sparse build fits its latent maps). An incremental build keeps its base's."""

from __future__ import annotations

from curindex.manifest import read_manifest
from curindex.pipeline.context import BuildContext
from curindex.pipeline.kinds import kind_for
from curindex.store import FileEntry


def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    base = ctx.base()
    if base is not None:  # G or the maps, their diagnostics and anchor scores: the base's
        doc = read_manifest(ctx.store, base).to_dict()
        state = {**doc["factorization"], "from_base": base}
        if doc.get("sparse"):
            state["sparse"] = doc["sparse"]
        return state, []
    return kind_for(ctx.cfg).factorize(ctx)
