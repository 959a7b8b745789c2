"""A build's plan, before the cluster spends anything: the exact-model pairs each stage scores,
the bytes it writes, and the score stage's time, estimated from a short scoring sample on this
machine (or from a rate the user gives).

``curindex plan --conf FILE`` prints it; every build logs it at its start and records it in
the manifest (``plan``) beside what the build then counted and timed. No Spark: the inputs are
counted with pyarrow, and the sample runs in this process on one thread, as one task would.

A store that holds an earlier full build with the same scorer plans from that build's score
stage instead (`rate_from_history`): what the cluster measured beats any sample.

The time model: a task scores an item at ``a + b * n_q`` seconds (``a``: reading and encoding
the item, ``b``: one pair, both measured on the sample at one query and at as many as a few
seconds allow, all ``n_q`` when pairs are cheap, which then needs no model), plus writing its
score row to a chunk (measured on rows of the sample's texts) and the item's bi-encoder
embedding when the search methods need one; the stage runs ``slots`` tasks at once,
after a fixed start (each worker importing the model libraries and building its scorer).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from curindex.config import BuildConfig, validation_queries
from curindex.ops.sample import count_rows
from curindex.ops.sample_cost import sample_cost
from curindex.quality.pooling import resolve_truth
from curindex.search.methods import needed_extras

FLOAT = {"float32": 4, "float16": 2, "sq8": 1}


@dataclass(frozen=True)
class BuildPlan:
    items: int
    anchor_queries: int  # k_q: scored against every item (a sparse build: 0)
    test_queries: int  # n_test: scored against every item, for validation
    # exact-model pairs: "anchor" (a dense index), "index" (what the index costs: anchor
    # pairs, or a sparse build's training pairs), "test" (validation's truth), "total"
    pairs: dict[str, int]
    biencoder_items: int  # items the bi-encoder embeds (0 without bi-encoder methods)
    bytes: dict[str, int]  # "vectors", "extra" (exact for flat indexes), "scores_work"
    slots: int  # tasks at once
    item_seconds: float  # one item, one task, all its queries (and its embedding)
    fixed_seconds: float
    score_seconds: float  # the estimate of the score stage
    source: str  # "sample" (measured here) or "rate" (given)
    kind: str = "dense"
    training_queries: int = 0  # a sparse build's, scored against (neighbours + random) items
    pair_seconds: float = 0.0  # a sparse build: one training pair, one task
    pooled: int = 0  # of the test pairs, pooled validation's (at most; 0: exact truth)

    def lines(self) -> list[str]:
        """The plan as log lines."""
        b, p = self.bytes, self.pairs
        embed = (f", {self.biencoder_items:,} bi-encoder embeddings" if self.biencoder_items
                 else "")
        if self.kind == "sparse":
            per_q = p["index"] // max(1, self.training_queries)
            first = (f"plan: sparse index: {self.training_queries:,} training queries x up to "
                     f"{per_q} items = {p['index']:,} exact-model pairs "
                     f"({p['index'] / max(1, self.items):.3g} per item); validation: "
                     f"{p['test']:,}{_pooled(self)}; {p['total']:,} in all{embed}")
        else:
            first = (f"plan: {self.items:,} items x ({self.anchor_queries} anchor + "
                     f"{self.test_queries} test queries) = {p['total'] - self.pooled:,} "
                     f"exact-model pairs ({p['anchor']:,} anchor, {p['test'] - self.pooled:,} "
                     f"test){embed}" + (f"; validation's pools: at most {self.pooled:,}"
                                         if self.pooled else ""))
        return [
            first,
            f"plan: writes {_size(b['vectors'])} of item vectors, {_size(b['extra'])} of "
            f"extra index, {_size(b['scores_work'])} of score rows in the work folder"
            + (f", {_size(b['kept_scores'])} of kept scores" if b.get("kept_scores") else ""),
            f"plan: score stage about {_duration(self.score_seconds)} on {self.slots} task "
            f"slots ({self.item_seconds * 1000:.3g} ms per item per slot"
            + (f", {self.pair_seconds * 1000:.3g} ms per training pair" if self.kind == "sparse"
               else "") + f", {_source_text(self.source)})",
        ]


def _pooled(plan: BuildPlan) -> str:
    return " pairs at most in the test queries' pools" if plan.pooled else \
        f" ({plan.items:,} items x {plan.test_queries} test queries)"


def _source_text(source: str) -> str:
    if source.startswith("version "):
        return f"the rate of {source}'s score stage"
    return "measured on a sample here" if source == "sample" else "from the rate given"


def plan_build(cfg: BuildConfig, *, rate: float | None = None, slots: int | None = None,
               n_items: int | None = None, n_queries: int | None = None,
               history: HistoryRate | None = None) -> BuildPlan:
    """The plan of a full build of `cfg`. `rate`: the score stage's pairs per second, when
    the user knows it; else `history` (an earlier build's stage, `rate_from_history`); else
    measured on a sample. `slots`: tasks that run at once (default: the config's local
    master's cores, or its executors'). `n_items`, `n_queries`: the sources' sizes, when known
    (else counted)."""
    n = count_rows(cfg.items, role="items") if n_items is None else n_items
    sparse = cfg.index.kind == "sparse"
    k_q = 0 if sparse else cfg.anchors.n_queries
    bi = needs_biencoder(cfg)
    slots = slots or task_slots(cfg)
    n_train = training_queries(cfg, n_items=n, n_queries=n_queries) if sparse else 0
    sp = cfg.sparse
    index = min(n_train * (sp.neighbours + sp.random_items), n_train * n) if sparse else n * k_q
    n_valid = validation_queries(cfg)
    truth, _ = resolve_truth(cfg.validate.ground_truth, n_test=n_valid, n_items=n,
                             index_pairs=index)
    # exact truth: the test queries are scored against every item, in the score stage;
    # pooled: each test query's pool (at most) is scored in validation
    n_test = n_valid if truth == "exact" else 0
    n_q = k_q + n_test  # scored against every item
    test = n * n_test if truth == "exact" else n_valid * pool_size(cfg, n)
    pairs = {"anchor": n * k_q, "index": index, "test": test, "total": index + test}
    pair_s = 0.0
    if rate:
        item_s, fixed, source, pair_s = n_q / rate * slots, 0.0, "rate", slots / rate
    elif history is not None and not sparse:  # rate_from_history: same n_q queries per item
        pairs_per_s = history.pairs_per_s * slots / history.slots
        item_s, fixed, source = n_q / pairs_per_s * slots, 0.0, f"version {history.version}"
    else:
        cost = sample_cost(cfg, n_q=max(n_q, 1), bi=bi)
        item_s = cost.item_seconds(n_q) + (cost.embed if bi else 0.0)
        pair_s, fixed, source = cost.per_item + cost.per_pair, cost.fixed, "sample"
    return BuildPlan(
        items=n, anchor_queries=k_q, test_queries=n_test, pairs=pairs,
        biencoder_items=n if bi else 0, bytes=plan_bytes(cfg, n),
        slots=slots, item_seconds=round(item_s, 6), fixed_seconds=round(fixed, 3),
        score_seconds=round(fixed + (n * item_s + index * pair_s * sparse) / slots, 1),
        source=source, kind=cfg.index.kind, training_queries=n_train,
        pair_seconds=round(pair_s, 6), pooled=0 if truth == "exact" else test)


def pool_size(cfg: BuildConfig, n_items: int) -> int:
    """At most how many items a test query's pool holds with pooled validation: every
    candidate search's items at the largest budget, the bi-encoder's top items and the audit
    (fewer in fact: the searches find many of the same items)."""
    from curindex.quality.validation import candidates

    v = cfg.validate
    budget = max([b for b in v.budgets if b < n_items], default=0)
    specs = candidates(cfg.index.methods, v.rounds, v.seed_sizes)
    deep = len({s.method for s in specs} - {"bi-rerank"}) * pool_depth(cfg, [budget])
    return min(n_items, len(specs) * budget + deep + bi_depth(cfg, [budget]) + v.audit_items)


# A true top-10 item can sit deep in the bi-encoder's ranking (msmarco-5k with a teacher that
# shares no weights with it: 4 of 500 between ranks 1,000 and 1,908, none beyond).
POOL_DEPTH_FACTOR = 4


def pool_depth(cfg: BuildConfig, budgets: list[int]) -> int:
    """How far each pool reads every method's ranking past its largest budget, and the
    bi-encoder's: `[validate] pool_depth`, else POOL_DEPTH_FACTOR x the largest budget."""
    return cfg.validate.pool_depth or POOL_DEPTH_FACTOR * max(budgets, default=0)


def bi_depth(cfg: BuildConfig, budgets: list[int]) -> int:
    """The bi-encoder's top items in each pool (`pool_depth`); none where the build does not
    embed its items."""
    return pool_depth(cfg, budgets) if needs_biencoder(cfg) else 0


def training_queries(cfg: BuildConfig, *, n_items: int, n_queries: int | None = None) -> int:
    """A sparse build's training queries: the log's queries that are not test queries (at most
    `log_queries`) and `synthetic_queries` made from items (at most one per item)."""
    n = count_rows(cfg.queries, role="queries") if n_queries is None else n_queries
    sp = cfg.sparse
    return min(sp.log_queries, max(0, n - cfg.anchors.n_test)) + min(sp.synthetic_queries,
                                                                     n_items)


def other_kind(cfg: BuildConfig) -> BuildConfig:
    """The config with the other build kind (and that kind's default methods), to plan both
    side by side."""
    from curindex.config import config_from_dict

    doc = cfg.to_dict()
    sparse = cfg.index.kind == "dense"
    doc["index"] = {**doc["index"], "kind": "sparse" if sparse else "dense"}
    doc["index"].pop("methods")
    if not sparse:
        doc["factorize"]["tune"] = False
    return config_from_dict(doc, source=cfg.source, check=False)


@dataclass(frozen=True)
class HistoryRate:
    """The score stage of an earlier build: its pairs per second on `slots` task slots."""

    version: str
    pairs_per_s: float
    slots: int


def rate_from_history(versions: list[tuple[str, dict[str, Any]]], *, fingerprint: str,
                      bi: bool, n_q: int) -> HistoryRate | None:
    """The newest of `versions` (id and manifest, oldest first) that scored every item of its
    corpus in one run (not incremental, not resumed) with the same scorer (`fingerprint`),
    the same bi-encoder pass and the same `n_q` queries per item, with a recorded plan: its
    whole stage (start included) in pairs per second. A scheduled rebuild so plans from what
    the cluster did last time."""
    for version, m in reversed(versions):
        plan, counts = m.get("plan") or {}, m.get("counts") or {}
        seconds = (m.get("timings_s") or {}).get("score")
        pairs = counts.get("pairs_scored_this_run")
        if (not plan or not seconds or not pairs or pairs != counts.get("pairs_scored")
                or pairs != (plan.get("pairs") or {}).get("total")  # incremental: fewer
                or plan.get("anchor_queries", 0) + plan.get("test_queries", 0) != n_q
                or (m.get("scorer") or {}).get("fingerprint") != fingerprint
                or bool(plan.get("biencoder_items")) != bi):
            continue
        return HistoryRate(version, pairs / seconds, int(plan["slots"]))
    return None


def needs_biencoder(cfg: BuildConfig) -> bool:
    """Whether the build embeds every item with the bi-encoder (its methods need "bi", or a
    sparse build: its item vectors come from the embedding)."""
    return cfg.index.kind == "sparse" or "bi" in needed_extras(cfg.index.methods)


def task_slots(cfg: BuildConfig) -> int:
    """Tasks that run at once: the executors' cores when the config sets them, else the
    local master's threads."""
    conf = cfg.spark.conf
    if "spark.executor.instances" in conf:
        return int(conf["spark.executor.instances"]) * int(conf.get("spark.executor.cores", 1))
    m = re.fullmatch(r"local\[(\d+|\*)\]", cfg.spark.master.strip())
    if m:
        return os.cpu_count() or 1 if m.group(1) == "*" else int(m.group(1))
    return 1 if cfg.spark.master.strip() == "local" else os.cpu_count() or 1


def plan_bytes(cfg: BuildConfig, n: int) -> dict[str, int]:
    """What the build writes: the item-vector and extra index files (exact for flat index
    types: faiss's header per shard plus a fixed size per vector) and the score rows."""
    from curindex.scoring.biencoder import BI_DIM

    sparse = cfg.index.kind == "sparse"
    k_q = cfg.anchors.n_queries if not sparse else 0
    n_q = k_q + validation_queries(cfg)
    dim = BI_DIM if sparse else cfg.anchors.n_items  # a latent vector: the embedding's size
    shards = cfg.index.num_shards
    out = {"vectors": _index_bytes(cfg.index.factory, dim, n, shards)}
    need = needed_extras(cfg.index.methods)
    width = ((dim if sparse else k_q) if "h" in need else 0) + (BI_DIM if "bi" in need else 0)
    from curindex.search.shardindex import extra_factory

    out["extra"] = (_index_bytes(extra_factory(cfg.index.encoding), width, n, shards)
                    if width else 0)
    # float32 score rows (and a float32 embedding), before Parquet's compression
    row = 4 * (n_q + (BI_DIM if "bi" in need or sparse else 0))
    out["scores_work"] = n * row
    if cfg.index.keep_scores:
        out["kept_scores"] = n * row
    return out


def _index_bytes(factory: str, dim: int, n: int, shards: int) -> int:
    """Bytes of `shards` faiss files holding `n` vectors of an exhaustive index type, from a
    tiny index of that type (header, and bytes per vector); an IVF, HNSW or PQ index's
    structure varies with the data, so its size is the same formula, an estimate."""
    import faiss

    from curindex.search.shardindex import empty_index

    rng = np.random.default_rng(0)
    x = rng.normal(size=(max(256, dim * 4), dim)).astype(np.float32)
    sizes = []
    for count in (1, 2):
        index = empty_index(factory, dim)
        if not index.is_trained:
            index.train(x)
        index.add_with_ids(x[:count], np.arange(count, dtype=np.int64))
        sizes.append(len(faiss.serialize_index(index)))
    per_vector = sizes[1] - sizes[0]
    header = sizes[0] - per_vector
    return shards * header + n * per_vector


def plan_dict(plan: BuildPlan) -> dict[str, Any]:
    return dataclasses.asdict(plan)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
