"""The sparse build kind, Spark side (``curindex.kinds.sparse``): training queries (the log's
non-test queries and synthetic queries made from items) are scored only against their
bi-encoder neighbours and a few random items (``curindex.pipeline.pairs``): ``|Q| (k_d + r)``
exact-model pairs, however large the corpus. The maps that turn any item's bi-encoder
embedding into its latent vector are fitted on the driver from those entries
(``curindex.kinds.latent``; the entries and their items' embeddings are small). Every item is
still read once, for its bi-encoder embedding (and, for exact validation, its test-query
scores): the score stage's item rows.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curindex.config import synthetic_tests
from curindex.errors import CurIndexError, InputError
from curindex.kinds import scorerows
from curindex.kinds.latent import LatentMaps, fit_maps
from curindex.kinds.sparse import MAPS_FILE, SparseFeatures
from curindex.pipeline.anchors import Anchors, made_queries, seeded_sample
from curindex.pipeline.chunks import open_dir
from curindex.pipeline.context import BuildContext
from curindex.pipeline.kinds.base import QuerySide
from curindex.pipeline.pairs import choose_pairs, read_entries, score_pair_chunks
from curindex.search.methods import Latent
from curindex.store import FileEntry

log = logging.getLogger("curindex.pipeline")

# every item's bi-encoder embedding is part of its score row (the features of a sparse
# item; a dense one's only when its search methods need it)
NEEDS_BI = True

DEFINING_FILES = ("anchors/items.parquet", "anchors/queries.parquet", MAPS_FILE)
_QUERY_EMBEDDINGS = "train-queries-bi.npy"  # in the work folder, for the fit


def choose(ctx: BuildContext, items: DataFrame, queries: DataFrame, n_items: int,
           n_queries: int) -> Anchors:
    """n_test test queries and up to `log_queries` training queries from the log (a seeded
    choice, disjoint), and `synthetic_queries` training queries made from a seeded sample of
    items (synthetic tuning queries, where made, from the next items of that sample). No
    anchor items."""
    a, sp = ctx.cfg.anchors, ctx.cfg.sparse
    if n_queries < a.n_test:
        raise InputError(f"queries: {n_queries} queries, fewer than n_test = {a.n_test}")
    n_log = min(sp.log_queries, n_queries - a.n_test)
    q = seeded_sample(queries, a.n_test + n_log, seed=a.seed, salt="queries")
    test, train = q[: a.n_test], q[a.n_test:]
    made, tuning = made_queries(items, sp.synthetic_queries, synthetic_tests(ctx.cfg),
                                seed=a.seed, n_items=n_items)
    test = tuning + test  # synthetic tuning queries first: they tune
    train = [(i, t) for i, t in train + made if t.strip()]
    if not train:
        raise InputError("queries: no training query (the log holds only the test queries and "
                         "[sparse] synthetic_queries is 0)")
    return Anchors(query_ids=[i for i, _ in train], query_texts=[t for _, t in train],
                   test_ids=[i for i, _ in test], test_texts=[t for _, t in test],
                   item_ids=[], item_texts=[])


def scored_queries(ctx: BuildContext, anchors: Anchors) -> list[str]:
    """At most the test queries are scored against every item (with exact validation: their
    exact top items are its truth); the training queries are scored in pairs."""
    return list(anchors.test_texts) if ctx.exact_truth() else []


def test_column(ctx: BuildContext) -> int | None:
    return 0 if ctx.exact_truth() else None


def score_more(ctx: BuildContext) -> dict:
    """Choose the pairs and score them (an incremental build keeps its base's maps and scores
    no pair)."""
    prep = ctx.load("prepare")
    if prep["base"] is not None:
        return {"index_pairs": 0, "index_pairs_this_run": 0}
    from curindex.scoring.biencoder import get_biencoder

    sp, anchors, spark = ctx.cfg.sparse, ctx.anchors(), ctx.spark
    q_emb = get_biencoder().encode(anchors.query_texts)  # [n_q, 384]
    _write_npy(f"{ctx.work}/{_QUERY_EMBEDDINGS}", q_emb)
    rows = ctx.scores()
    pairs = choose_pairs(rows, q_emb, neighbours=sp.neighbours, random_items=sp.random_items,
                         seed=sp.seed).cache()
    try:
        n_pairs = pairs.count()
        log.info("sparse: %s training queries x (%d neighbours + %d random items): %s pairs",
                 f"{len(q_emb):,}", sp.neighbours, sp.random_items, f"{n_pairs:,}")
        partitions = ctx.cfg.spark.score_partitions or 4 * spark.sparkContext.defaultParallelism
        scored, kept = score_pair_chunks(
            spark, pairs, rows, queries=anchors.query_texts, scorer_cfg=ctx.cfg.scorer,
            fingerprint=ctx.inputs["scorer"], partitions=partitions,
            block_items=ctx.cfg.spark.block_items, out_path=f"{ctx.work}/pairs",
            n_pairs=n_pairs, stamp=ctx.inputs,
            resume=ctx.store.load_build_state(ctx.version, "score") is None)
    finally:
        pairs.unpersist()
    if kept + scored != n_pairs:
        raise CurIndexError(f"version {ctx.version}: the pair chunks hold {kept + scored} "
                            f"pairs, {n_pairs} were to be scored")
    return {"index_pairs": n_pairs, "index_pairs_this_run": scored,
            "training_queries": len(q_emb)}


def factorize(ctx: BuildContext) -> tuple[dict, list[FileEntry]]:
    """Fit the maps on the driver from the scored pairs (|Q| (k_d + r) entries) and their
    items' embeddings (one row per distinct entry item)."""
    ctx.check_chunks()
    ctx.check_chunks("pairs")
    sp = ctx.cfg.sparse
    entries = read_entries(ctx.spark, f"{ctx.work}/pairs")
    wanted = ctx.spark.createDataFrame(
        [(i,) for i in pc.unique(entries.column("item_id")).to_pylist()], "item_id string")
    emb = ctx.scores().select("item_id", "bi").join(F.broadcast(wanted), "item_id").toArrow()
    row_of = {i: r for r, i in enumerate(emb.column("item_id").to_pylist())}
    i_emb = scorerows.matrix(emb.column("bi"))  # [n_entry_items, 384]
    q_emb = _read_npy(f"{ctx.work}/{_QUERY_EMBEDDINGS}")  # [n_q, 384]
    qi = entries.column("query").to_numpy()
    ii = np.array([row_of[i] for i in entries.column("item_id").to_pylist()], dtype=np.int64)
    s = entries.column("score").to_numpy().astype(np.float64)
    maps, stats = fit_maps(q_emb, i_emb, qi, ii, s, hidden=sp.hidden, epochs=sp.epochs,
                           patience=sp.patience, learning_rate=sp.learning_rate,
                           weight_decay=sp.weight_decay, holdout=sp.holdout,
                           batch_size=sp.batch_size, seed=sp.seed)
    log.info("sparse: maps fitted on %s entries in %d epochs (best %d): held-out MSE %.4g "
             "(%.4g with the bi-encoder alone)", f"{stats.entries:,}", stats.epochs,
             stats.best_epoch, stats.holdout_mse, stats.holdout_mse_start)
    files = [ctx.store.write_bytes(ctx.version, MAPS_FILE, maps.to_bytes())]
    state = {"rcond": ctx.cfg.factorize.rcond, "effective_rank": maps.dim,
             "singular_values": [], "condition_number_kept": None,
             "sparse": {"maps_file": MAPS_FILE, "dim": maps.dim, "alpha": maps.alpha,
                        "beta": maps.beta, "fit": dict(vars(stats))}}
    return state, files


def features(ctx: BuildContext) -> SparseFeatures:
    return SparseFeatures(maps=_maps(ctx))


def query_side(ctx: BuildContext, anchors: Anchors, bi_test: np.ndarray | None,
               pairs=None) -> QuerySide:
    maps, n = _maps(ctx), len(anchors.test_ids)
    priors = maps.query(bi_test) if bi_test is not None else np.zeros((n, maps.dim))
    return QuerySide(anchor_exact=np.zeros((n, 0)), anchor_columns=np.zeros((maps.dim, 0)),
                     priors=priors,
                     latent=Latent(maps.alpha, maps.beta, ctx.cfg.sparse.prior_weight),
                     rcond=ctx.cfg.factorize.rcond)


def _maps(ctx: BuildContext) -> LatentMaps:
    return LatentMaps.from_bytes(ctx.store.read_bytes(ctx.version, MAPS_FILE),
                                 where=f"version {ctx.version}: {MAPS_FILE}")


def _write_npy(uri: str, a: np.ndarray) -> None:
    fs, path = open_dir(uri)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    with fs.open_output_stream(path) as out:
        out.write(buf.getvalue())


def _read_npy(uri: str) -> np.ndarray:
    fs, path = open_dir(uri)
    with fs.open_input_stream(path) as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)

