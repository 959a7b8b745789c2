"""Write-shards stage: item vectors ``G h`` as sharded faiss indexes (``pipeline.shards``); an
incremental build rewrites only the shards its changes touch and references the others."""

from __future__ import annotations

import faiss

from curindex.baseline import BI_DIM
from curindex.config import BuildConfig
from curindex.errors import CurIndexError
from curindex.manifest import read_manifest
from curindex.methods import NEEDS
from curindex.pipeline import incremental
from curindex.pipeline.context import BuildContext
from curindex.pipeline.shards import write_shards
from curindex.shardindex import (
    EXTRAS,
    TRAINED_FILE,
    empty_index,
    extra_factory,
    extra_trained_file,
)
from curindex.store import FileEntry


def extras(cfg: BuildConfig) -> tuple[str, ...]:
    """The extra indexes each shard carries (``curindex.shardindex.EXTRAS``): what the
    config's search methods need."""
    need = {n for m in cfg.index.methods for n in NEEDS[m]}
    return tuple(n for n in EXTRAS if n in need)


def run(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    prep, base, cfg, store = ctx.load("prepare"), ctx.base(), ctx.cfg, ctx.store
    touched, trained, shared, refs = None, None, [], {}
    if base is not None:
        manifest = read_manifest(store, base)
        touched = ctx.load("score")["changes"]["touched_shards"]
        trained = _base_trained(store, base, manifest, extras(cfg))
        shared, refs = incremental.shared_shards(store, base, manifest, touched)
    shards, trained_files = write_shards(
        ctx.spark, ctx.scores(), g=ctx.npy("G.npy"), k_q=ctx.k_q,
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
    # What the extra indexes cost in storage, beside the item vectors.
    kept = ("scores",) if cfg.index.keep_scores else ()
    sizes = {name: sum(f.size for f in files if f.path.startswith(f"shards/{name}-"))
             for name in extras(cfg) + kept}
    state = {"shards": shards, "bytes": sum(f.size for f in files) - sum(sizes.values()),
             "extra_bytes": sizes, "references": refs, "shards_written": written,
             "shards_shared": [s["shard"] for s in shared]}
    return state, [*files, *(FileEntry(**f) for f in trained_files)]


def _base_trained(store, base: str, manifest, names: tuple[str, ...]) -> dict[str, bytes]:
    """The base version's trained empty indexes by column, so an incremental build's shards
    share its quantizers (a base written before the extra indexes kept theirs stored them in
    float32, which needs no training)."""
    out = {"vector": store.read_bytes(base, TRAINED_FILE)}
    for name in names:
        rel = extra_trained_file(name)
        if rel in manifest.files or rel in manifest.references:
            out[name] = store.read_bytes(base, rel)
        else:
            dim = manifest.anchors.n_queries if name == "h" else BI_DIM
            out[name] = faiss.serialize_index(
                empty_index(extra_factory(manifest.config.index.encoding), dim)).tobytes()
    return out
