"""The index build as stages with durable outputs:

    prepare -> score -> factorize -> write_shards -> validate -> commit [-> publish]

``run_build`` runs them in one Spark application; ``run_stage`` runs one (the Airflow DAG runs
each as its own spark-submit). A stage reads what earlier stages left, in the version's folder
of the store (``_builds/<version>/<stage>.json``, anchors, ``G.npy``, shards) or in the work
folder (the scores' chunk files), and overwrites only its own outputs, so a retried stage is
idempotent. The version becomes visible only when ``commit`` writes its manifest (last); serving
readers see it only once it is published, and ``publish`` refuses a version under its recall
thresholds. Library code receives a SparkSession and never creates one.

Resume: each stage state records the digest of the config it ran with. ``run_build`` skips the
stages an earlier attempt at the same version completed with the same config (up to the first
that did not), and the score stage keeps the chunks an unfinished attempt committed, so a
build whose driver died re-runs with the same ``--version`` from where it stopped.
``run_stage`` always recomputes the stage it is asked for.

Incremental: with ``base`` (a committed version built with ``[index] keep_scores``), prepare
takes the base's anchors and ``G``, score scores only the new and changed items, factorize is
the base's, and write_shards rewrites only the shards the changes touch; the others are
referenced from the base (``curindex.build.incremental``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from curindex import __version__
from curindex.anchors import Anchors, choose_anchors
from curindex.build import incremental
from curindex.build.factorize import factorize, gather_anchor_rows
from curindex.build.score import SCORES_SCHEMA, score_items, shard_of
from curindex.build.select import leverage_anchor_items
from curindex.build.shards import write_shards
from curindex.build.validate import (
    baseline_recall,
    candidate_overlap,
    index_candidates,
    recall_with_candidates,
    shortlists,
)
from curindex.config import BuildConfig
from curindex.corpus import check_texts, read_texts
from curindex.errors import ConfigError, CurIndexError, StoreError
from curindex.evaluate import figure_keys
from curindex.gate import figure_order, gate_failures
from curindex.report import render_report
from curindex.scoring import fingerprint_for
from curindex.shardindex import LABEL_SHIFT, TRAINED_FILE, empty_index, is_exact
from curindex.store import FileEntry, Store, validate_version_id

log = logging.getLogger("curindex.build")

MANIFEST_FORMAT = 1
STAGES = ("prepare", "score", "factorize", "write_shards", "validate", "commit")


@dataclass(frozen=True)
class BuildResult:
    version: str
    store_uri: str
    manifest: dict
    published: bool


def new_version_id() -> str:
    """A sortable, unique version id: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def work_dir(cfg: BuildConfig, version: str) -> str:
    """Where Spark writes this build's intermediate scores (a Hadoop URI or local path)."""
    if cfg.store.work_dir:
        return f"{cfg.store.work_dir.rstrip('/')}/{version}"
    if "://" in cfg.store.uri:
        raise ConfigError(
            f"{cfg.source}: [store] work_dir: required when the store is not a local path "
            f"(store uri {cfg.store.uri!r}); give a Hadoop URI Spark can write, e.g. s3a://..."
        )
    return f"{cfg.store.uri.rstrip('/')}/_work/{version}"


class _Build:
    """One version's build: the config, the store, and the stage outputs kept there."""

    def __init__(self, spark: SparkSession, cfg: BuildConfig, version: str,
                 base: str | None = None) -> None:
        self.spark, self.cfg, self.version = spark, cfg, validate_version_id(version)
        self.store = Store.open(cfg.store.uri)
        self.work = work_dir(cfg, self.version)
        self.k_q = cfg.anchors.n_queries
        # The base is resolved once, here (prepare records it; later stages read it there).
        self._base_arg = self.store.resolve(base) if base else None
        self.config_digest = config_digest(cfg, base=self._base_arg)

    # -- stage state: small JSON documents under <store>/_builds/<version>/, outside the
    # version folder (which must hold only what its manifest lists) --
    def _state_path(self, stage: str = "") -> str:
        base = f"{self.store.root.rstrip('/')}/_builds/{self.version}"
        return f"{base}/{stage}.json" if stage else base

    def clear_states(self) -> None:
        info = self.store.fs.get_file_info(self._state_path())
        if info.type != pafs.FileType.NotFound:
            self.store.fs.delete_dir(self._state_path())

    def save(self, stage: str, state: dict, files: list[FileEntry]) -> None:
        doc = json.dumps({**state, "config_digest": self.config_digest,
                          "files": [dataclasses.asdict(f) for f in files]}).encode()
        self.store.fs.create_dir(self._state_path(), recursive=True)
        tmp = self._state_path(f"{stage}.tmp-{secrets.token_hex(4)}")
        with self.store.fs.open_output_stream(tmp) as out:
            out.write(doc)
        self.store.fs.move(tmp, self._state_path(stage))  # a reader sees all of it or none

    def load(self, stage: str) -> dict:
        try:
            with self.store.fs.open_input_stream(self._state_path(stage)) as f:
                return json.loads(f.read())
        except (FileNotFoundError, OSError) as e:
            raise CurIndexError(
                f"version {self.version}: stage {stage!r} has not completed; run it first"
            ) from e

    def has_state(self, stage: str) -> bool:
        return self.store.fs.get_file_info(self._state_path(stage)).type == pafs.FileType.File

    def completed(self, stage: str) -> bool:
        """Whether an earlier attempt completed `stage` of this version with this config."""
        if stage == "commit" or not self.has_state(stage):
            return False
        try:
            return self.load(stage).get("config_digest") == self.config_digest
        except (CurIndexError, ValueError):
            return False

    def committed_manifest(self) -> dict | None:
        """The manifest when this version is already committed with this same config; None
        when it is not committed; StoreError when it was committed from another config."""
        try:
            manifest = self.store.read_manifest(self.version)
        except StoreError:
            return None
        if manifest.get("config") != self.cfg.to_dict():
            raise StoreError(f"version {self.version} is already committed in {self.store.uri} "
                             "from a different config; versions are immutable, use a new id")
        return manifest

    def base(self) -> str | None:
        """The base version of an incremental build (None for a full build)."""
        return self.load("prepare").get("base")

    def scores(self):
        """The committed score chunks: Spark skips `_meta.json` and `_temporary/` (names that
        start with `_`), where unfinished chunks are written. An incremental build adds the
        base's rows of the unchanged items."""
        chunks = self.spark.read.schema(SCORES_SCHEMA).parquet(f"{self.work}/scores")
        base = self.base()
        if base is None:
            return chunks
        items = read_texts(self.spark, self.cfg.items, role="items")
        return chunks.unionByName(incremental.reused_rows(items, self._base_rows(base)))

    def _base_rows(self, base: str, *, keys_only: bool = False):
        manifest = self.store.read_manifest(base)
        files = incremental.base_score_files(self.store, base, manifest)
        return incremental.base_rows(self.spark, self.store.uri, files, keys_only=keys_only)

    def anchors(self) -> Anchors:
        items = pq.read_table(io.BytesIO(self.store.read_bytes(self.version,
                                                              "anchors/items.parquet")))
        qs = pq.read_table(io.BytesIO(self.store.read_bytes(self.version,
                                                           "anchors/queries.parquet")))
        role = qs.column("role").to_pylist()
        qid, qtext = qs.column("id").to_pylist(), qs.column("text").to_pylist()
        return Anchors(
            query_ids=[i for i, r in zip(qid, role, strict=True) if r == "anchor"],
            query_texts=[t for t, r in zip(qtext, role, strict=True) if r == "anchor"],
            test_ids=[i for i, r in zip(qid, role, strict=True) if r == "test"],
            test_texts=[t for t, r in zip(qtext, role, strict=True) if r == "test"],
            item_ids=items.column("id").to_pylist(),
            item_texts=items.column("text").to_pylist(),
        )

    def npy(self, rel: str) -> np.ndarray:
        return np.load(io.BytesIO(self.store.read_bytes(self.version, rel)), allow_pickle=False)

    # -- the stages --
    def prepare(self) -> tuple[dict, list[FileEntry]]:
        cfg = self.cfg
        empty_index(cfg.index.factory, cfg.anchors.n_items)  # a bad factory string fails first
        fingerprint = fingerprint_for(cfg.scorer)
        base = self._base_arg
        if base is not None:  # a base this config cannot extend fails first
            manifest = self.store.read_manifest(base)
            incremental.check_base(cfg, base, manifest)
            if manifest["scorer"]["fingerprint"] != fingerprint:
                raise ConfigError(
                    f"--base {base}: the scorer here has fingerprint {fingerprint}, the base "
                    f"was built with {manifest['scorer']['fingerprint']}")
        self.store.begin_version(self.version)  # clears leftovers of an earlier attempt
        self.clear_states()
        _remove_work(self.spark, self.work)  # new anchors or items: no score chunk is kept
        items = read_texts(self.spark, cfg.items, role="items")
        queries = read_texts(self.spark, cfg.queries, role="queries")
        item_stats = check_texts(items, role="items", source=cfg.items.path)
        query_stats = check_texts(queries, role="queries", source=cfg.queries.path)
        state = {"fingerprint": fingerprint, "items": item_stats.rows,
                 "queries_available": query_stats.rows, "item_max_chars": item_stats.max_chars,
                 "item_mean_chars": round(item_stats.mean_chars, 1), "base": None,
                 "detached_anchors": []}
        if base is None:
            anchors = choose_anchors(items, queries, cfg.anchors, n_items=item_stats.rows,
                                     n_queries=query_stats.rows)
            return state, _write_anchor_tables(self.store, self.version, anchors)
        anchor_items = pq.read_table(io.BytesIO(self.store.read_bytes(base,
                                                                      "anchors/items.parquet")))
        detached = incremental.detached_anchors(items, anchor_items.column("id").to_pylist(),
                                                anchor_items.column("text").to_pylist())
        if detached:
            log.warning("--base %s: %d anchor items were deleted or changed in the corpus (%s); "
                        "they stay anchors (their stored texts) but leave search results",
                        base, len(detached), ", ".join(detached[:5]))
        # The small files that define the projection are copied; shards are referenced.
        files = [self.store.write_bytes(self.version, rel, self.store.read_bytes(base, rel))
                 for rel in ("anchors/items.parquet", "anchors/queries.parquet", "G.npy",
                             "anchors/scores.npy")]
        return {**state, "base": base, "detached_anchors": detached}, files

    def score(self) -> tuple[dict, list[FileEntry]]:
        prep, anchors, cfg = self.load("prepare"), self.anchors(), self.cfg
        items = read_texts(self.spark, cfg.items, role="items")
        changes, scored = None, prep["items"]
        if prep["base"] is not None:
            keys = self._base_rows(prep["base"], keys_only=True)
            changes = incremental.changes(items, keys, shard_of("id", cfg.index.num_shards))
            items = incremental.items_to_score(items, keys)
            if changes["new"] + changes["changed"] + changes["unchanged"] != prep["items"]:
                raise CurIndexError(f"version {self.version}: {changes} do not add up to the "
                                    f"{prep['items']} items of the corpus")
            log.info("incremental build on %s: %d new, %d changed, %d deleted, %d unchanged "
                     "items; %d of %d shards touched", prep["base"], changes["new"],
                     changes["changed"], changes["deleted"], changes["unchanged"],
                     len(changes["touched_shards"]), cfg.index.num_shards)
            scored = changes["new"] + changes["changed"]
        partitions = cfg.spark.score_partitions or 4 * self.spark.sparkContext.defaultParallelism
        n_q = len(anchors.scored_query_texts)
        # Chunks an unfinished attempt committed are kept; a stage that completed before and
        # runs again (run_stage) starts over.
        done = score_items(self.spark, items, queries=anchors.scored_query_texts,
                           scorer_cfg=cfg.scorer, fingerprint=prep["fingerprint"],
                           num_shards=cfg.index.num_shards, partitions=partitions,
                           block_items=cfg.spark.block_items, out_path=f"{self.work}/scores",
                           n_items=scored, resume=not self.has_state("score"))
        # An incremental build checks the rows it scored; the base's are counted by changes().
        chunks = self.spark.read.schema(SCORES_SCHEMA).parquet(f"{self.work}/scores")
        n = chunks.count()
        if n != scored:
            raise CurIndexError(f"version {self.version}: the score chunks hold {n} items, "
                                f"{scored} were to be scored")
        truncated = chunks.where("truncated").count()
        if changes is not None:
            truncated += changes.pop("unchanged_truncated")
        state = {"pairs_scored": scored * n_q, "changes": changes,
                 "pairs_scored_this_run": done.items_scored * n_q,
                 "chunks": done.n_chunks, "chunks_resumed": done.chunks_resumed,
                 "items_truncated": truncated}
        return state, []

    def factorize(self) -> tuple[dict, list[FileEntry]]:
        base = self.base()
        if base is not None:  # G, its diagnostics and anchor scores are the base's (prepare)
            return {**self.store.read_manifest(base)["factorization"], "from_base": base}, []
        anchors, files, selection = self.anchors(), [], {}
        if self.cfg.anchors.items == "leverage":  # anchor items from the scores, first
            t0 = time.perf_counter()
            ids, texts = leverage_anchor_items(self.scores(), k_q=self.k_q,
                                               k_i=self.cfg.anchors.n_items)
            anchors = dataclasses.replace(anchors, item_ids=ids, item_texts=texts)
            files = _write_anchor_tables(self.store, self.version, anchors)
            selection = {"anchor_selection_s": round(time.perf_counter() - t0, 3)}
        rows = gather_anchor_rows(self.scores(), anchors.item_ids)  # [k_i, k_q + n_test]
        rcond, tuning = self.cfg.factorize.rcond, {}
        if self.cfg.factorize.tune:
            tuning = self._tune(rows, anchors)
            rcond = tuning["chosen_rcond"]
        fac = factorize(rows, k_q=self.k_q, rcond=rcond, min_rank=self.cfg.factorize.min_rank)
        log.info("U %dx%d: effective rank %d of %d (rcond %g)", self.k_q, len(anchors.item_ids),
                 fac.rank, fac.singular_values.size, fac.rcond)
        files += [self.store.write_bytes(self.version, "G.npy", _npy_bytes(fac.g)),
                  self.store.write_bytes(self.version, "anchors/scores.npy", _npy_bytes(rows))]
        return {**fac.diagnostics(), **selection, "tuning": tuning or None}, files

    def n_tune(self) -> int:
        """Test queries (the first ones) used to tune the inversion, never to report recall."""
        f = self.cfg.factorize
        return int(self.cfg.anchors.n_test * f.tune_fraction) if f.tune else 0

    def _tune(self, rows: np.ndarray, anchors: Anchors) -> dict:
        """rcond from the grid with the best mean Top-k-Recall@budget on the tuning queries
        (the first n_tune test queries): one distributed shortlist pass per candidate."""
        v, k_q, n_tune = self.cfg.validate, self.k_q, self.n_tune()
        k_i = len(anchors.item_ids)
        budgets = [b for b in v.budgets if b < self.load("prepare")["items"]]
        pairs = figure_keys(v.ks, budgets, k_i)
        if not pairs:
            raise ConfigError(f"{self.cfg.source}: [factorize] tune: no Top-k-Recall@budget "
                              f"figure to tune on ([validate] ks {v.ks}, budgets {v.budgets}, "
                              f"k_i {k_i})")
        c = rows[:, k_q : k_q + n_tune]  # [k_i, n_tune]
        curve: dict[str, float | None] = {}
        for rcond in self.cfg.factorize.tune_rconds:
            try:
                g = factorize(rows, k_q=k_q, rcond=rcond,
                              min_rank=self.cfg.factorize.min_rank).g
            except CurIndexError:  # too few directions left at this cutoff
                curve[repr(rcond)] = None
                continue
            lists = shortlists(self.spark, self.scores(), g=g, c=c, anchor_ids=anchors.item_ids,
                               k_q=k_q, k_max=max(k for k, _ in pairs),
                               m_max=max(b for _, b in pairs) - k_i, first=k_q)
            recall = recall_with_candidates(lists, lists.cand, anchors.item_ids, c, pairs)
            curve[repr(rcond)] = float(np.mean(list(recall.values())))
            log.info("tuning: rcond %g: mean recall %.4f on %d tuning queries", rcond,
                     curve[repr(rcond)], n_tune)
        scored = [(value, -i) for i, value in enumerate(curve.values()) if value is not None]
        if not scored:
            raise CurIndexError(f"version {self.version}: no rcond in [factorize] tune_rconds "
                                "leaves min_rank singular values")
        best = -max(scored)[1]  # best mean recall; the first in grid order on a tie
        return {"objective": "mean of " + ", ".join(f"{k}@{b}" for k, b in pairs),
                "n_tune": n_tune, "tune_ids": anchors.test_ids[:n_tune],
                "curve": curve, "chosen_rcond": self.cfg.factorize.tune_rconds[best]}

    def write_shards(self) -> tuple[dict, list[FileEntry]]:
        prep, base = self.load("prepare"), self.base()
        touched, trained, shared, refs = None, None, [], {}
        if base is not None:
            touched = self.load("score")["changes"]["touched_shards"]
            trained = self.store.read_bytes(base, TRAINED_FILE)
            shared, refs = incremental.shared_shards(self.store, base,
                                                     self.store.read_manifest(base), touched)
        shards, trained_file = write_shards(
            self.spark, self.scores(), g=self.npy("G.npy"), k_q=self.k_q,
            factory=self.cfg.index.factory, n_items=prep["items"], store_uri=self.store.uri,
            version=self.version, extras=index_extras(self.cfg),
            keep_scores=self.cfg.index.keep_scores, shards=touched, trained=trained)
        files = [FileEntry(**f) for s in shards for f in s.pop("files")]
        written = [s["shard"] for s in shards]
        shards = sorted(shards + shared, key=lambda s: s["shard"])
        n = sum(s["n_items"] for s in shards)
        if n != prep["items"]:
            raise CurIndexError(f"version {self.version}: shards hold {n} items, the corpus "
                                f"{prep['items']}")
        # What the extra indexes cost in storage, beside the item vectors.
        kept = ("scores",) if self.cfg.index.keep_scores else ()
        sizes = {name: sum(f.size for f in files if f.path.startswith(f"shards/{name}-"))
                 for name in index_extras(self.cfg) + kept}
        state = {"shards": shards, "bytes": sum(f.size for f in files) - sum(sizes.values()),
                 "extra_bytes": sizes, "references": refs, "shards_written": written,
                 "shards_shared": [s["shard"] for s in shared]}
        return state, [*files, FileEntry(**trained_file)]

    def validate(self) -> tuple[dict, list[FileEntry]]:
        v, k_q, cfg = self.cfg.validate, self.k_q, self.cfg
        anchors, n_items = self.anchors(), self.load("prepare")["items"]
        k_i = len(anchors.item_ids)
        # A budget that reaches the whole corpus measures nothing.
        budgets = [b for b in v.budgets if b < n_items]
        pairs = figure_keys(v.ks, budgets, k_i)
        first = k_q + self.n_tune()  # the tuning queries come first and are not reported
        c = self.npy("anchors/scores.npy")[:, first:]  # [k_i, n_test]: the test queries' vectors
        state: dict = {"n_test": c.shape[1], "min_recall": dict(v.min_recall), "recall": {},
                       "recall_exact_search": {}, "index_recall_vs_exact": {}, "baseline": None}
        if c.shape[1] and pairs:
            state.update(self._measure(anchors, c, first, budgets, pairs))
        failed = gate_failures(state["recall"], v.min_recall)
        for name, value in sorted(state["recall"].items(), key=lambda kv: figure_order(kv[0])):
            base = (state["baseline"] or {}).get("recall", {}).get(name)
            log.info("Top-%s-Recall@%s = %.4f%s", *name.split("@"), value,
                     f" (bi-encoder {base:.4f})" if base is not None else "")
        for failure in failed:
            log.error("quality gate: %s (version %s)", failure, self.version)
        state.update(passed=not failed, failures=failed, index=cfg.index.factory)
        return state, []

    def _measure(self, anchors: Anchors, c: np.ndarray, first: int, budgets: list[int],
                 pairs: list[tuple[int, int]]) -> dict:
        """Recall of the reported test queries: score columns `first ..`, vectors `c`."""
        cfg, k_i = self.cfg, len(anchors.item_ids)
        m_max = max(b for _, b in pairs) - k_i
        # Detached anchors (incremental builds) still cost a call each, but are no results.
        detached = set(self.load("prepare").get("detached_anchors", []))
        live = [j for j, a in enumerate(anchors.item_ids) if a not in detached]
        live_ids, live_c, extra = [anchors.item_ids[j] for j in live], c[live], k_i - len(live)
        bi_queries = None
        if cfg.validate.baseline == "bi-encoder":
            from curindex.baseline import get_biencoder

            bi_queries = get_biencoder().encode(anchors.test_texts[first - self.k_q:])
        self.spark.sparkContext.setJobDescription("curindex: validate recall")
        try:
            lists = shortlists(self.spark, self.scores(), g=self.npy("G.npy"), c=c,
                               anchor_ids=live_ids, k_q=self.k_q,
                               k_max=max(k for k, _ in pairs), m_max=m_max,
                               bi_queries=bi_queries, b_max=max(budgets), first=first)
            exact_search = recall_with_candidates(lists, lists.cand, live_ids, live_c, pairs,
                                                  extra)
            if is_exact(cfg.index.factory, k_i):
                recall, overlap = exact_search, {str(b): 1.0 for b in budgets if b > k_i}
            else:
                cand = index_candidates(
                    self.spark, self.scores(),
                    read_shard=self._read_shard_file,
                    shards=self.load("write_shards")["shards"], c=c, k_q=self.k_q,
                    anchor_ids=live_ids, m_max=m_max, nprobe=cfg.index.nprobe,
                    ef_search=cfg.index.ef_search, first=first)
                recall = recall_with_candidates(lists, cand, live_ids, live_c, pairs, extra)
                overlap = {str(b): candidate_overlap(cand, lists.cand, b - k_i)
                           for b in budgets if b > k_i}
        finally:
            self.spark.sparkContext.setJobDescription(None)
        baseline = None
        if bi_queries is not None:
            baseline = {"name": "bi-encoder", "recall": baseline_recall(lists, pairs)}
        return {"recall": recall, "recall_exact_search": exact_search,
                "index_recall_vs_exact": overlap, "baseline": baseline}

    def _read_shard_file(self, rel: str) -> bytes:
        """A shard file of this (uncommitted) version, or of the version it references."""
        holder = self.load("write_shards")["references"].get(rel, self.version)
        return self.store.read_bytes(holder, rel)

    def commit(self) -> dict:
        cfg = self.cfg
        states = {s: self.load(s) for s in STAGES[:-1]}
        for st in states.values():
            st.pop("config_digest", None)
        # A file a later stage rewrote (the anchor table, with leverage anchors) counts once.
        files = list({f["path"]: FileEntry(**f)
                      for st in states.values() for f in st.pop("files")}.values())
        timings = {s: st.pop("seconds") for s, st in states.items()}
        prep, anchors = states["prepare"], self.anchors()
        manifest = {
            "format": MANIFEST_FORMAT,
            "curindex_version": __version__,
            "config": cfg.to_dict(),
            "config_source": cfg.source,
            "scorer": {"kind": cfg.scorer.kind, "fingerprint": prep["fingerprint"]},
            "anchors": {
                "n_queries": len(anchors.query_ids), "n_items": len(anchors.item_ids),
                "n_test": len(anchors.test_ids), "n_tune": self.n_tune(), "seed": cfg.anchors.seed,
                "strategy": cfg.anchors.items, "items_file": "anchors/items.parquet",
                "queries_file": "anchors/queries.parquet", "scores_file": "anchors/scores.npy",
                # anchor items deleted or changed in the corpus since (incremental builds)
                "detached": prep.get("detached_anchors", []),
            },
            "counts": {
                "items": prep["items"], "queries_available": prep["queries_available"],
                "items_truncated": states["score"]["items_truncated"],
                "item_max_chars": prep["item_max_chars"],
                "shards": len(states["write_shards"]["shards"]),
                "pairs_scored": states["score"]["pairs_scored"],
                # less than pairs_scored when the score stage resumed an unfinished attempt
                "pairs_scored_this_run": states["score"].get("pairs_scored_this_run",
                                                             states["score"]["pairs_scored"]),
            },
            "factorization": states["factorize"],
            "index": {
                "factory": cfg.index.factory, "dim": len(anchors.item_ids),
                "metric": "inner_product", "label_shift": LABEL_SHIFT, "g_file": "G.npy",
                "shards": states["write_shards"]["shards"],
                "bytes": states["write_shards"]["bytes"],
                "extra_bytes": states["write_shards"]["extra_bytes"],
            },
            "validation": states["validate"],
            "timings_s": timings,
        }
        refs = states["write_shards"].pop("references")
        if prep["base"] is not None:
            manifest["incremental"] = {
                "base": prep["base"], **states["score"]["changes"],
                "shards_written": states["write_shards"]["shards_written"],
                "shards_shared": states["write_shards"]["shards_shared"],
            }
        # The report lives inside the version: immutable and checksummed like the index.
        report = render_report({**manifest, "version": self.version})
        files += [self.store.write_bytes(self.version, f"report/{name}", data)
                  for name, data in sorted(report.items())]
        manifest["report_dir"] = "report"
        manifest = self.store.commit_version(self.version, manifest, files, references=refs)
        _remove_work(self.spark, self.work)
        self.clear_states()
        return manifest


def index_extras(cfg: BuildConfig) -> tuple[str, ...]:
    """The extra indexes each shard carries (``curindex.shardindex.EXTRAS``)."""
    return (("h",) if cfg.index.adaptive else ()) + (("bi",) if cfg.index.biencoder else ())


def run_stage(spark: SparkSession, cfg: BuildConfig, *, version: str, stage: str,
              base: str | None = None) -> dict:
    """Run one stage of the build of `version`; returns its state (the manifest for commit).
    `base` (prepare only) makes it an incremental build on that committed version."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    build = _Build(spark, cfg, version, base=base)
    committed = build.committed_manifest()
    if committed is not None:  # a re-run of a finished build: nothing to do, nothing to undo
        log.info("version %s is already committed: stage %s skipped", build.version, stage)
        return committed if stage == "commit" else {"skipped": "version already committed"}
    t0 = time.perf_counter()
    log.info("version %s: stage %s: start", build.version, stage)
    if stage == "commit":
        result = build.commit()
    else:
        result, files = getattr(build, stage)()
        build.save(stage, {**result, "seconds": round(time.perf_counter() - t0, 3)}, files)
    log.info("version %s: stage %s: done in %.1f s", build.version, stage,
             time.perf_counter() - t0)
    return result


def run_build(spark: SparkSession, cfg: BuildConfig, *, version: str | None = None,
              publish: bool = False, base: str | None = None) -> BuildResult:
    """Build every stage of one version, then publish it when asked and it passed its gate.
    With `base` (a version id or "current") the build is incremental on that version."""
    version = validate_version_id(version or new_version_id())
    log.info("building version %s into %s%s", version, cfg.store.uri,
             f" (incremental on {base})" if base else "")
    build = _Build(spark, cfg, version, base=base)
    manifest: dict = {}
    resuming = build.committed_manifest() is None
    for stage in STAGES:
        # A re-run after a failure (driver lost, ...) skips what an earlier attempt completed
        # with this config, up to the first stage it did not: later ones depend on it.
        resuming = resuming and build.completed(stage)
        if resuming:
            log.info("version %s: stage %s: completed by an earlier attempt with this config: "
                     "skipped", version, stage)
            continue
        manifest = run_stage(spark, cfg, version=version, stage=stage, base=base)
    if publish:
        publish_version(Store.open(cfg.store.uri), version)
    return BuildResult(version=version, store_uri=Store.open(cfg.store.uri).uri,
                       manifest=manifest, published=publish)


def config_digest(cfg: BuildConfig, *, base: str | None = None) -> str:
    """sha256 of the config's settings (what the manifest records as ``config``) and of the
    base version of an incremental build."""
    doc = cfg.to_dict() if base is None else {**cfg.to_dict(), "_base": base}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def publish_version(store: Store, version: str) -> None:
    """Publish a committed version (the store refuses one that failed its quality gate)."""
    store.publish(version)
    log.info("published version %s", version)


def _write_anchor_tables(store: Store, version: str, anchors: Anchors) -> list[FileEntry]:
    n_q, n_t = len(anchors.query_ids), len(anchors.test_ids)
    items = pa.table({"id": anchors.item_ids, "text": anchors.item_texts})
    queries = pa.table({
        "id": anchors.query_ids + anchors.test_ids,
        "text": anchors.query_texts + anchors.test_texts,
        "role": ["anchor"] * n_q + ["test"] * n_t,
    })
    return [store.write_bytes(version, "anchors/items.parquet", _parquet_bytes(items)),
            store.write_bytes(version, "anchors/queries.parquet", _parquet_bytes(queries))]


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _remove_work(spark: SparkSession, work: str) -> None:
    """Delete the intermediate scores through Hadoop's FileSystem (any URI Spark writes)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(work)
    path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(path, True)
