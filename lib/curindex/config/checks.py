"""Values of a config that type-check but are impossible (``check_values``; a `[scorer]`
table alone: ``scorer_value_problems``): each is a ConfigError naming the file and the key.
``curindex.config`` runs these checks when a config is loaded."""

from __future__ import annotations

from typing import Any

from curindex.config.limits import MAX_LIST_ITEMS, bound_problems, figure_ok
from curindex.errors import ConfigError
from curindex.scoring.device import DEVICE_RE
from curindex.scoring.models import REVISION_RE
from curindex.scoring.registry import scorer_problems

INPUT_FORMATS = ("auto", "parquet", "jsonl", "beir")
ANCHOR_ITEM_STRATEGIES = ("random", "kmeans", "leverage")
# The search methods a version can serve (``curindex.search.methods``), simplest first, and
# the build kinds (``curindex.kinds``).
SEARCH_METHODS = ("bi-rerank", "cur", "adaptive", "bi-seeded")
KINDS = ("dense", "sparse")
SPARSE_METHODS = ("bi-rerank", "bi-seeded")  # a sparse index has no anchor items
ENCODINGS = ("float32", "float16", "sq8")
TRUTHS = ("auto", "exact", "pooled")


def scorer_value_problems(s: Any) -> list[tuple[str, str]]:
    """(key, problem) for each impossible `[scorer]` value."""
    out = list(scorer_problems(s.kind, path=s.path, target=s.target, options=s.options))
    out += bound_problems("scorer", s)
    if s.max_query_tokens < 2 or s.max_item_tokens < 2:
        out.append(("max_query_tokens" if s.max_query_tokens < 2 else "max_item_tokens",
                    "must be >= 2"))
    if not (REVISION_RE.match(s.revision) and ".." not in s.revision):
        out.append(("revision", f"must be a branch, tag or commit hash, got {s.revision!r}"))
    if not DEVICE_RE.match(s.device):
        out.append(("device", f"must be auto, cpu, cuda or cuda:N, got {s.device!r}"))
    return out


def check_values(cfg: Any, source: str) -> None:
    """Values that type-check but are impossible."""
    a, s = cfg.anchors, cfg.scorer

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key}: {msg}")

    for section in ("anchors", "scorer", "factorize", "index", "validate", "sparse", "spark"):
        for key, problem in bound_problems(section, getattr(cfg, section)):
            need(False, f"[{section}] {key}", problem)

    for name, inp in (("items", cfg.items), ("queries", cfg.queries)):
        need(bool(inp.path), f"[{name}] path", "must not be empty")
        need(inp.format in INPUT_FORMATS, f"[{name}] format", f"must be one of {INPUT_FORMATS}")
        need(bool(inp.id_column), f"[{name}] id_column", "must not be empty")
        need(bool(inp.text_columns), f"[{name}] text_columns", "must name at least one column")
    need(  # a sparse build has no anchor items
        a.n_items <= a.n_queries or cfg.index.kind == "sparse",
        "[anchors] n_items",
        f"k_i = {a.n_items} > k_q = n_queries = {a.n_queries}: the intersection matrix would be "
        "wide and its pseudo-inverse under-determined; use several times more anchor queries",
    )
    need(0 <= a.synthetic_queries <= a.n_queries, "[anchors] synthetic_queries",
         f"must be in [0, n_queries = {a.n_queries}], got {a.synthetic_queries}")
    need(
        a.items in ANCHOR_ITEM_STRATEGIES,
        "[anchors] items",
        f"unknown strategy {a.items!r} (known: {', '.join(ANCHOR_ITEM_STRATEGIES)})",
    )
    for key, problem in scorer_value_problems(s):
        need(False, f"[scorer] {key}", problem)
    f = cfg.factorize
    need(0.0 <= f.rcond < 1.0, "[factorize] rcond", f"must be in [0, 1), got {f.rcond}")
    need(bool(f.tune_rconds) and len(f.tune_rconds) <= MAX_LIST_ITEMS
         and all(0.0 <= r < 1.0 for r in f.tune_rconds), "[factorize] tune_rconds",
         f"must be a non-empty list of at most {MAX_LIST_ITEMS} values in [0, 1), got "
         f"{f.tune_rconds[:MAX_LIST_ITEMS]}")
    need(0.0 < f.tune_fraction < 1.0, "[factorize] tune_fraction",
         f"must be in (0, 1), got {f.tune_fraction}")
    need(not f.tune or (int(a.n_test * f.tune_fraction) >= 1 and
         int(a.n_test * f.tune_fraction) < a.n_test), "[factorize] tune",
         f"needs test queries on both sides of the split: n_test = {a.n_test} with "
         f"tune_fraction {f.tune_fraction}")
    need(
        f.min_rank <= a.n_items,
        "[factorize] min_rank",
        f"{f.min_rank} > k_i = {a.n_items}: no intersection matrix could reach that rank",
    )
    v = cfg.validate
    for name, floor in v.min_recall.items():
        need(figure_ok(name), f"[validate] min_recall.{name[:40]}",
             "keys are 'k@budget' with 0 < k < budget, e.g. \"10@200\"")
        b = name.partition("@")[2]
        need(cfg.index.kind == "sparse" or int(b) > a.n_items, f"[validate] min_recall.{name}",
             f"budget {b} must exceed k_i = {a.n_items}")
        need(0.0 <= floor <= 1.0, f"[validate] min_recall.{name}",
             f"must be in [0, 1], got {floor}")
        need(a.n_test > 0, f"[validate] min_recall.{name}", "a threshold needs n_test > 0")
    _check_search(cfg, need)
    _check_sparse(cfg, need)
    need(bool(cfg.index.factory.strip()), "[index] factory", "must not be empty")
    need(bool(cfg.store.uri), "[store] uri", "must not be empty")


def _check_search(cfg: Any, need: Any) -> None:
    """The search methods, the encoding of their indexes, and how the build chooses one."""
    ix, v = cfg.index, cfg.validate
    need(bool(ix.methods) and len(set(ix.methods)) == len(ix.methods)
         and set(ix.methods) <= set(SEARCH_METHODS), "[index] methods",
         f"must be a non-empty list of distinct methods of {SEARCH_METHODS}, got {ix.methods}")
    need(ix.encoding in ENCODINGS, "[index] encoding",
         f"must be one of {ENCODINGS}, got {ix.encoding!r}")
    need(all(r >= 2 for r in v.rounds) and bool(v.rounds), "[validate] rounds",
         f"must be a non-empty list of rounds >= 2, got {v.rounds}")
    need(all(n >= 1 for n in v.seed_sizes) and bool(v.seed_sizes), "[validate] seed_sizes",
         f"must be a non-empty list of sizes >= 1, got {v.seed_sizes}")
    names = [n.strip() for n in v.objective.split(",")] if v.objective else []
    for name in names:
        need(figure_ok(name), "[validate] objective",
             f"{name[:40]!r}: figures are 'k@budget' with 0 < k < budget, e.g. \"10@200\"")
        k, _, b = name.partition("@")
        need(int(k) in v.ks and int(b) in v.budgets, "[validate] objective",
             f"{name!r} is not measured: add {k} to [validate] ks and {b} to budgets")
    need(v.ground_truth in TRUTHS, "[validate] ground_truth",
         f"must be one of {TRUTHS}, got {v.ground_truth!r}")
    lift = v.min_lift_over_baseline
    need(lift is None or -1.0 <= lift <= 1.0, "[validate] min_lift_over_baseline",
         f"must be in [-1, 1], got {lift}")
    need(lift is None or "bi-rerank" in ix.methods, "[validate] min_lift_over_baseline",
         "compares with the bi-encoder baseline: add \"bi-rerank\" to [index] methods")


def _check_sparse(cfg: Any, need: Any) -> None:
    """The build kind, and the sparse build's settings."""
    ix, sp = cfg.index, cfg.sparse
    need(ix.kind in KINDS, "[index] kind", f"must be one of {KINDS}, got {ix.kind!r}")
    if ix.kind != "sparse":
        return
    need(not cfg.factorize.tune, "[factorize] tune",
         "tunes the cutoff of the dense build's pseudo-inverse; a sparse build has none")
    need(set(ix.methods) <= set(SPARSE_METHODS), "[index] methods",
         f"a sparse index has no anchor items: its methods are among {SPARSE_METHODS}, got "
         f"{ix.methods}")
    need(ix.factory.replace(" ", "") in ("IDMap,Flat", "Flat"), "[index] factory",
         "a sparse index searches its latent vectors exactly: IDMap,Flat")
    need(sp.neighbours >= 0 and sp.random_items >= 0 and sp.neighbours + sp.random_items >= 1,
         "[sparse] neighbours", "neighbours + random_items must be >= 1 (the items each "
         f"training query is scored against), got {sp.neighbours} + {sp.random_items}")
    need(sp.log_queries >= 0 and sp.synthetic_queries >= 0
         and sp.log_queries + sp.synthetic_queries >= 1, "[sparse] log_queries",
         "log_queries + synthetic_queries must be >= 1 (the training queries)")
    need(0.0 < sp.learning_rate <= 10.0, "[sparse] learning_rate",
         f"must be in (0, 10], got {sp.learning_rate}")
    need(0.0 <= sp.weight_decay <= 10.0, "[sparse] weight_decay",
         f"must be in [0, 10], got {sp.weight_decay}")
    need(0.0 < sp.holdout < 0.5, "[sparse] holdout", f"must be in (0, 0.5), got {sp.holdout}")
    need(0.0 < sp.prior_weight <= 1e6, "[sparse] prior_weight",
         f"must be in (0, 1e6], got {sp.prior_weight}")
