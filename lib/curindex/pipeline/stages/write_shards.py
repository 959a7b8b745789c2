"""Write-shards stage: item vectors (the build kind's: ``G h`` for a dense build, the latent
vector ``f(bi)`` for a sparse one) as sharded faiss indexes (``pipeline.shards``); an
incremental build rewrites only the shards its changes touch and references the others."""

from __future__ import annotations

from curindex.config import BuildConfig
from curindex.errors import CurIndexError
from curindex.manifest import read_manifest
from curindex.pipeline import incremental
from curindex.pipeline.context import BuildContext
from curindex.pipeline.kinds import kind_for
from curindex.pipeline.shards import write_shards
from curindex.scoring.biencoder import BI_DIM
from curindex.search.methods import needed_extras
from curindex.search.shardindex import EXTRA_TRAINED, TRAINED_FILE
from curindex.store import FileEntry


def extras(cfg: BuildConfig) -> tuple[str, ...]:
    """The extra indexes each shard carries (``curindex.search.shardindex.EXTRAS``): what the
    config's search methods need."""
    return needed_extras(cfg.index.methods)


def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    prep, base, cfg, store = ctx.load("prepare"), ctx.base(), ctx.cfg, ctx.store
    touched, trained, shared, refs = None, None, [], {}
    if base is not None:
        manifest = read_manifest(store, base)
        touched = ctx.load("score")["changes"]["touched_shards"]
        trained = _base_trained(store, base, extras(cfg))
        shared, refs = incremental.shared_shards(store, base, manifest, touched)
    features = kind_for(cfg).features(ctx)
    shards, trained_files = write_shards(
        ctx.spark, ctx.scores(), features=features,
        factory=cfg.index.factory, encoding=cfg.index.encoding, n_items=prep["items"],
        store_uri=store.uri, version=ctx.version, extras=extras(cfg),
        keep_scores=cfg.index.keep_scores, shards=touched, trained=trained)
    files = [FileEntry(**f) for s in shards for f in s.pop("files")]
    written = [s["shard"] for s in shards]
    shards = sorted(shards + shared, key=lambda s: s["shard"])
    n = sum(s["n_items"] for s in shards)
    if n != prep["items"]:
        raise CurIndexError(f"version {ctx.version}: shards hold {n} items, the corpus "
                            f"{prep['items']}")
    # What the extra index and the kept scores cost in storage, beside the item vectors.
    kinds = (("x",) if extras(cfg) else ()) + (("scores",) if cfg.index.keep_scores else ())
    sizes = {name: sum(f.size for f in files if f.path.startswith(f"shards/{name}-"))
             for name in kinds}
    layout = [{"name": n, "dim": features.h_dim if n == "h" else BI_DIM}
              for n in extras(cfg)]
    state = {"shards": shards, "bytes": sum(f.size for f in files) - sum(sizes.values()),
             "extra_bytes": sizes, "extra_layout": layout, "references": refs,
             "shards_written": written, "shards_shared": [s["shard"] for s in shared]}
    return state, [*files, *(FileEntry(**f) for f in trained_files)]


def _base_trained(store, base: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """The base version's trained empty indexes by column, so an incremental build's shards
    share its quantizers."""
    out = {"vector": store.read_bytes(base, TRAINED_FILE)}
    if names:
        out["x"] = store.read_bytes(base, EXTRA_TRAINED)
    return out
