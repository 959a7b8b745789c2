"""Write-shards stage: item vectors ``G h`` as sharded faiss indexes (``pipeline.shards``); an
incremental build rewrites only the shards its changes touch and references the others."""

from __future__ import annotations

from curindex.config import BuildConfig
from curindex.errors import CurIndexError
from curindex.manifest import read_manifest
from curindex.pipeline import incremental
from curindex.pipeline.context import BuildContext
from curindex.pipeline.shards import write_shards
from curindex.shardindex import TRAINED_FILE
from curindex.store import FileEntry


def index_extras(cfg: BuildConfig) -> tuple[str, ...]:
    """The extra indexes each shard carries (``curindex.shardindex.EXTRAS``)."""
    return (("h",) if cfg.index.adaptive else ()) + (("bi",) if cfg.index.biencoder else ())


def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    prep, base, cfg, store = ctx.load("prepare"), ctx.base(), ctx.cfg, ctx.store
    touched, trained, shared, refs = None, None, [], {}
    if base is not None:
        touched = ctx.load("score")["changes"]["touched_shards"]
        trained = store.read_bytes(base, TRAINED_FILE)
        shared, refs = incremental.shared_shards(store, base, read_manifest(store, base),
                                                 touched)
    shards, trained_file = write_shards(
        ctx.spark, ctx.scores(), g=ctx.npy("G.npy"), k_q=ctx.k_q,
        factory=cfg.index.factory, n_items=prep["items"], store_uri=store.uri,
        version=ctx.version, extras=index_extras(cfg),
        keep_scores=cfg.index.keep_scores, shards=touched, trained=trained)
    files = [FileEntry(**f) for s in shards for f in s.pop("files")]
    written = [s["shard"] for s in shards]
    shards = sorted(shards + shared, key=lambda s: s["shard"])
    n = sum(s["n_items"] for s in shards)
    if n != prep["items"]:
        raise CurIndexError(f"version {ctx.version}: shards hold {n} items, the corpus "
                            f"{prep['items']}")
    # What the extra indexes cost in storage, beside the item vectors.
    kept = ("scores",) if cfg.index.keep_scores else ()
    sizes = {name: sum(f.size for f in files if f.path.startswith(f"shards/{name}-"))
             for name in index_extras(cfg) + kept}
    state = {"shards": shards, "bytes": sum(f.size for f in files) - sum(sizes.values()),
             "extra_bytes": sizes, "references": refs, "shards_written": written,
             "shards_shared": [s["shard"] for s in shared]}
    return state, [*files, FileEntry(**trained_file)]
