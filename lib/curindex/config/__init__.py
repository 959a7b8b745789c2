"""Typed, validated build settings loaded from TOML.

An unknown key, a wrong type or an impossible value is a :class:`ConfigError` that names the
file and the key (``conf/demo.toml: [anchors] n_items: ...``). Relative paths are resolved
against the config file's folder, so a build does not depend on the directory it is started
from. ``BuildConfig.to_dict()`` is what a version's manifest records.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curindex.config.checks import (
    SEARCH_METHODS,
    SPARSE_METHODS,
    check_values,
    scorer_value_problems,
)
from curindex.errors import ConfigError
from curindex.quality.figures import Figure, figure_grid
from curindex.scoring.models import looks_like_model_id
from curindex.scoring.registry import KINDS

BUILTIN_PREFIX = "builtin:"
SCORER_KINDS = tuple(KINDS)


@dataclass(frozen=True)
class InputConfig:
    """Where a table of texts comes from: Parquet, JSON lines, a BEIR folder, or a builtin."""

    path: str
    format: str = "auto"  # auto | parquet | jsonl | beir
    id_column: str = "_id"
    # Texts of several columns are joined with text_separator; null or empty parts are skipped
    # (BEIR's convention: "title: text" when the title is not empty, else "text").
    text_columns: list[str] = field(default_factory=lambda: ["title", "text"])
    text_separator: str = ": "


@dataclass(frozen=True)
class QueriesConfig(InputConfig):
    """The query source: the same settings as items, one text column by default."""

    text_columns: list[str] = field(default_factory=lambda: ["text"])


@dataclass(frozen=True)
class AnchorsConfig:
    n_queries: int = 200  # k_q: anchor queries scored against every item
    n_items: int = 50  # k_i: anchor items, the dimension of the item vectors
    n_test: int = 50  # held-out queries scored in the same pass, for validation
    seed: int = 0
    items: str = "random"  # anchor item strategy: random | kmeans | leverage
    # Of the n_queries anchor queries, this many are made from items (first sentences), for
    # query logs too small to give k_q + n_test queries.
    synthetic_queries: int = 0


@dataclass(frozen=True)
class ScorerConfig:
    kind: str = "maxsim-minilm"  # maxsim-minilm | cross-encoder | callable | toy
    # model directory (cross-encoder; optional override for maxsim-minilm), or a Hugging Face
    # model id "org/name" read from the local cache (curindex.scoring.models)
    path: str = ""
    # the model id's revision in the cache: a branch, tag or commit hash (its commit hash
    # enters the fingerprint); unused for a local folder
    revision: str = "main"
    target: str = ""  # "module:callable" returning a Scorer (kind = "callable")
    batch_size: int = 64  # model forward-pass batch size
    max_query_tokens: int = 64
    max_item_tokens: int = 128
    threads: int = 0  # torch threads per task; 0 = the cores Spark gives each task
    # where the model runs: auto (a GPU when there is one: in a Spark task the one Spark
    # assigned it), cpu, cuda (a GPU, required) or cuda:N (curindex.scoring.device)
    device: str = "auto"
    options: dict[str, str] = field(default_factory=dict)  # passed to callable/toy scorers


@dataclass(frozen=True)
class FactorizeConfig:
    # Singular values below rcond * largest are dropped: pinv of a near-square U amplifies noise.
    rcond: float = 1e-3
    min_rank: int = 2  # fewer usable directions than this is a FactorizeError
    # Tuned inversion: rcond chosen from tune_rconds by the mean Top-k-Recall@budget on the
    # first tune_fraction of the test queries; recall is then reported on the others only.
    tune: bool = False
    tune_rconds: list[float] = field(
        default_factory=lambda: [1e-15, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
    tune_fraction: float = 0.5


# Settings that were replaced; a config that still sets one is told what replaced it.
REPLACED = {
    ("index", "adaptive"): "[index] methods (adaptive search: \"adaptive\", \"bi-seeded\")",
    ("index", "biencoder"): "[index] methods (bi-encoder search: \"bi-seeded\", "
                            "\"bi-rerank\")",
    ("validate", "baseline"): "[index] methods: the bi-encoder baseline (\"bi-rerank\") is "
                              "measured whenever the version supports it",
}


@dataclass(frozen=True)
class IndexConfig:
    # How the index is made (``curindex.kinds``): "dense", the CUR build (every item scored
    # against k_q anchor queries), or "sparse" (training queries scored against a few items
    # each, item vectors fitted as a function of the bi-encoder embedding; [sparse]).
    kind: str = "dense"
    factory: str = "IDMap,Flat"  # any faiss index_factory string, inner-product metric
    num_shards: int = 4
    nprobe: int = 16  # IVF: inverted lists probed per query
    ef_search: int = 128  # HNSW: search depth
    # The search methods the version supports (and its build validates and chooses from):
    # adaptive and bi-seeded need each item's anchor-query scores as a second sharded index
    # ("h"), bi-seeded and bi-rerank its bi-encoder embedding as a third ("bi").
    # ["cur"]: the minimal index.
    methods: list[str] = field(default_factory=lambda: list(SEARCH_METHODS))
    # How the extra indexes store their vectors: float32, float16 (half the bytes) or sq8
    # (faiss 8-bit scalar quantizer, a quarter).
    encoding: str = "float16"
    # Keep every item's scores (anchor and test queries) with its shard, as Parquet: what an
    # incremental build (``--base VERSION``) reuses for the items that did not change.
    keep_scores: bool = False


@dataclass(frozen=True)
class SparseConfig:
    """The sparse build (``[index] kind = "sparse"``): its exact-model pairs are training
    queries x (neighbours + random_items), whatever the corpus size."""

    neighbours: int = 10  # k_d: each training query's bi-encoder top items, scored exactly
    random_items: int = 10  # r: uniformly random items per training query, scored exactly
    log_queries: int = 10_000  # at most this many queries of the log (not test ones) train
    synthetic_queries: int = 1_000  # training queries made from items (first sentences)
    hidden: int = 256  # the maps' hidden layer
    epochs: int = 200  # at most; training stops when the held-out entries stop improving
    patience: int = 5  # epochs without improvement on the held-out entries
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    holdout: float = 0.1  # share of the entries held out of the fit, for early stopping
    batch_size: int = 4096  # entries per optimiser step
    # Search: how strongly the query's latent vector stays near its prior (the query map of
    # its bi-encoder embedding) when the rounds re-solve it on the items scored so far.
    prior_weight: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class ValidateConfig:
    # Top-k-Recall@budget is measured on the held-out test queries for k < budget; budgets
    # at or below k_i are measured for the bi-encoder-seeded methods only.
    ks: list[int] = field(default_factory=lambda: [1, 10, 100])
    budgets: list[int] = field(default_factory=lambda: [25, 50, 100, 200, 500])
    # The served search maximises the mean of these figures on the tuning queries
    # (comma-separated "k@budget" names). Empty: "10@200" when ks and budgets measure it,
    # else the largest figure they measure (`objective_figures`).
    objective: str = ""
    # The parameters tried for the multi-round methods. A seed size is tried at the budgets
    # above it; the defaults are half of each default budget from 50 up, so at every budget a
    # bi-seeded candidate keeps the bi-encoder's top half and spends the rest adaptively.
    rounds: list[int] = field(default_factory=lambda: [2, 4])
    seed_sizes: list[int] = field(default_factory=lambda: [25, 50, 100, 250])
    # Quality gate on the served search: {"10@200" = 0.9} means Top-10-Recall@200 >= 0.9.
    min_recall: dict[str, float] = field(default_factory=dict)
    # Optional gate rule: the served search minus the bi-encoder baseline, at every figure
    # both have, must be at least this (negative: a margin below it is allowed).
    min_lift_over_baseline: float | None = None
    # How the test queries' exact top items are known: "exact" (scored against every item),
    # "pooled" (the top of a pool: every validated search's candidates, the bi-encoder's top
    # pool_depth items and audit_items random items, scored exactly), or "auto" (exact while
    # n_test x items is at most half the index's own pairs, pooled otherwise).
    ground_truth: str = "auto"
    # how far each pool reads every method's ranking past its largest budget, and the
    # bi-encoder's top items; 0: four times the largest budget
    pool_depth: int = 0
    audit_items: int = 1000  # uniform random items in each pool, to estimate what it misses
    # Where the test queries leave fewer than MIN_TUNING_QUERIES to tune on (n_test x
    # tune_fraction), this many more tuning queries are made from items (as synthetic anchor
    # queries are, disjoint from them) and choose; the log's tuning queries hold each choice
    # to the bi-encoder baseline. 0: never (the baseline then serves).
    synthetic_tuning: int = 50


@dataclass(frozen=True)
class StoreConfig:
    uri: str = "store"  # local path or any URI pyarrow.fs opens (s3://, hdfs://, ...)
    # Where Spark writes the intermediate scores (a Hadoop URI: file:/, s3a://, hdfs://).
    # Default: <store>/_work when the store is a local path; required otherwise.
    work_dir: str = ""


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[2]"  # used when the job runs under plain python (spark-submit: its own)
    app_name: str = "curindex-build"
    score_partitions: int = 0  # 0 = 4 x the default parallelism
    block_items: int = 1024  # items per Arrow batch handed to score_block
    log_level: str = "WARN"  # Spark's own log level (curindex logs its stages at INFO)
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildConfig:
    items: InputConfig
    queries: QueriesConfig
    anchors: AnchorsConfig = field(default_factory=AnchorsConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    factorize: FactorizeConfig = field(default_factory=FactorizeConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    source: str = field(default="<dict>", compare=False)  # the file it came from (not a key)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting (what the manifest records)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


def load_config(path: str | Path) -> BuildConfig:
    """Read and validate a TOML build config; raise ConfigError naming the file and key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    return config_from_dict(data, source=str(p), base_dir=p.resolve().parent)


def config_from_dict(
    data: dict[str, Any], *, source: str = "<dict>", base_dir: Path | None = None,
    check: bool = True,
) -> BuildConfig:
    """Validate a parsed config. Relative input/store paths are resolved against base_dir.
    `check=False` checks keys and types only, not values (a config recorded in a manifest
    was checked when its version was built)."""
    cfg = _build(BuildConfig, data, source, where="")
    index = data.get("index") if isinstance(data.get("index"), dict) else {}
    if cfg.index.kind == "sparse" and "methods" not in index:  # the sparse kind's own default
        cfg = dataclasses.replace(cfg, index=dataclasses.replace(
            cfg.index, methods=list(SPARSE_METHODS)))
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
    if check:
        check_values(cfg, source)
    return dataclasses.replace(cfg, source=source)


def _err(source: str, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {where or 'top level'}: {msg}")


_type_hints = functools.cache(typing.get_type_hints)  # evaluated (compiled) once per class


def _build(cls: type, data: Any, source: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise _err(source, where, f"expected a table, got {type(data).__name__}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - set(fields))
    for name in unknown:
        replaced = REPLACED.get((where.strip("[]"), name))
        if replaced:
            raise _err(source, f"{where} {name}", f"replaced by {replaced}")
    if unknown:
        key = f"{where} {unknown[0]}" if where else unknown[0]
        raise _err(source, key, f"unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"[{name}]" if not where else f"{where} {name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _err(source, key, "required key is missing")
            continue
        kwargs[name] = _coerce(hints[name], data[name], source, key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):  # X | None: TOML has no null
        if value is None:  # (a recorded config, read back from JSON)
            return None
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key if key.startswith("[") else f"[{key}]")
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _err(source, key, f"expected a list of {item.__name__}, got {value!r}")
        return [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _err(source, key, f"expected a table, got {value!r}")
        if item is str:  # string tables take any scalar (Spark settings are strings)
            bad = [k for k, v in value.items() if isinstance(v, dict | list)]
            if bad:
                raise _err(source, f"{key}.{bad[0]}",
                           f"expected a string, number or bool, got {value[bad[0]]!r}")
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in value.items()}
        return {str(k): _coerce(item, v, source, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        raise _err(source, key, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _resolve_paths(cfg: BuildConfig, base: Path) -> BuildConfig:
    def local(p: str) -> str:
        if not p or p.startswith(BUILTIN_PREFIX) or "://" in p or Path(p).is_absolute():
            return p
        return str((base / p).resolve())

    return dataclasses.replace(
        cfg,
        items=dataclasses.replace(cfg.items, path=local(cfg.items.path)),
        queries=dataclasses.replace(cfg.queries, path=local(cfg.queries.path)),
        scorer=dataclasses.replace(cfg.scorer, path=_model_path(cfg.scorer.path, base)),
        store=dataclasses.replace(
            cfg.store, uri=local(cfg.store.uri), work_dir=local(cfg.store.work_dir)
        ),
    )


def _model_path(p: str, base: Path) -> str:
    """`[scorer] path`: a folder relative to the config's folder when one is there, else a
    Hugging Face model id when it reads "org/name", else that (missing) folder."""
    if not p or Path(p).is_absolute():
        return p
    if not (base / p).exists() and looks_like_model_id(p):
        return p
    return str((base / p).resolve())


def scorer_from_dict(data: Any, *, source: str) -> ScorerConfig:
    """A `[scorer]` table typed and checked as a config load checks it (ConfigError naming
    the key), as a reader checks the settings a manifest recorded before using them."""
    scorer = _build(ScorerConfig, data, source, where="[scorer]")
    for key, problem in scorer_value_problems(scorer):
        raise _err(source, f"[scorer] {key}", problem)
    return scorer


MIN_TUNING_QUERIES = 10  # fewer tuning queries cannot tell search methods apart


def synthetic_tests(cfg: BuildConfig) -> int:
    """Tuning queries a build makes from items (``[validate] synthetic_tuning``): where its
    test queries leave fewer than MIN_TUNING_QUERIES to tune on, else none (none without
    test queries)."""
    a = cfg.anchors
    if not a.n_test or int(a.n_test * cfg.factorize.tune_fraction) >= MIN_TUNING_QUERIES:
        return 0
    return cfg.validate.synthetic_tuning


def validation_queries(cfg: BuildConfig) -> int:
    """Every test query a build validates on: the log's n_test and the synthetic ones."""
    return cfg.anchors.n_test + synthetic_tests(cfg)


def objective_figures(v: ValidateConfig) -> list[Figure]:
    """The figures the served search maximises (see ``ValidateConfig.objective``)."""
    if v.objective:
        return [Figure.parse(n.strip()) for n in v.objective.split(",")]
    grid = figure_grid(v.ks, v.budgets)
    default = Figure(budget=200, k=10)
    return [default] if default in grid or not grid else [grid[-1]]
