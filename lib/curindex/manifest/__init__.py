"""The manifest of a version, typed: one owner of its schema and its format number.

A version's ``manifest.json`` is written last by the build's commit stage; the store adds its
envelope (``version``, ``files``, ``references``, ``created_at``). ``Manifest.from_dict`` reads
any format this code knows, upgrading older ones here and nowhere else, and refuses a newer
or malformed one with an IntegrityError naming the version and the field. Readers use the
typed fields; ``to_dict`` gives the JSON document back.

Format history: 1, the untyped manifest (sections filled by the pipeline as dicts); 2, the
same content read into these types (absent optional sections get their defaults); 3, the
served search (``search``: the method the build chose on its tuning queries, every method's
figures), the score stage's progress over time, the build's plan, and the config's
``[index] methods`` / ``encoding`` in place of the ``adaptive`` and ``biencoder`` switches (an
older version supports what its switches built, stored in float32, and serves plain CUR); 4,
the build kind (the config's ``[index] kind``, and a sparse build's ``sparse`` section) and the
exact-model pairs split into the index's and validation's (``counts``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from curindex.config import BuildConfig
from curindex.errors import IntegrityError
from curindex.manifest.codec import dump, load
from curindex.ops.plan import BuildPlan

FORMAT = 4


@dataclass(frozen=True)
class FileRef:
    size: int
    sha256: str


@dataclass(frozen=True)
class Reference:
    """A file this version uses but an older version holds."""

    version: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ScorerInfo:
    kind: str
    fingerprint: str


@dataclass(frozen=True)
class AnchorsInfo:
    n_queries: int  # k_q
    n_items: int  # k_i
    n_test: int
    seed: int
    strategy: str
    items_file: str
    queries_file: str
    scores_file: str  # [k_i, k_q + n_test] exact scores of the anchor items
    n_tune: int = 0  # of the test queries, the first n_tune tune and are never reported
    # anchor items deleted or changed in the corpus since (incremental builds)
    detached: tuple[str, ...] = ()


@dataclass(frozen=True)
class Counts:
    items: int
    queries_available: int
    items_truncated: int
    item_max_chars: int
    shards: int
    pairs_scored: int  # every exact-model pair the build scored
    pairs_scored_this_run: int
    index_pairs: int | None = None  # of them, what the index cost (None: before format 4)
    validation_pairs: int | None = None  # and what validation's truth cost


@dataclass(frozen=True)
class ProgressSample:
    """The score stage's progress: items scored by this many seconds after it began."""

    seconds: float
    items: int


@dataclass(frozen=True)
class Tuning:
    objective: str
    n_tune: int
    tune_ids: tuple[str, ...]
    curve: dict[str, float | None]
    chosen_rcond: float


@dataclass(frozen=True)
class Factorization:
    rcond: float
    effective_rank: int
    singular_values: tuple[float, ...]
    condition_number_kept: float | None
    anchor_selection_s: float | None = None
    tuning: Tuning | None = None
    from_base: str | None = None  # an incremental build's G is its base's


@dataclass(frozen=True)
class SparseFit:
    """How the latent maps were fitted (``curindex.kinds.latent.FitStats``)."""

    entries: int
    holdout_entries: int
    holdout_mse_start: float
    holdout_mse: float
    train_mse: float
    epochs: int
    best_epoch: int
    seconds: float


@dataclass(frozen=True)
class SparseInfo:
    """A sparse build's index: its training queries, the pairs they were scored on, and the
    fitted maps (``maps_file``) with the score rescaling ``beta (s - alpha)``."""

    maps_file: str
    dim: int
    alpha: float
    beta: float
    fit: SparseFit
    training_queries: int
    synthetic_queries: int
    neighbours: int
    random_items: int
    pairs: int


@dataclass(frozen=True)
class ShardEntry:
    shard: int
    n_items: int
    index: str  # faiss index of the item vectors
    ids: str  # id map: label, item_id, text (Arrow IPC; Parquet in older versions)
    extra_index: str | None = None  # the segments of `IndexInfo.extra_layout`, same labels
    h_index: str | None = None  # older versions: anchor-query scores per item, alone
    bi_index: str | None = None  # older versions: bi-encoder embeddings, alone
    scores: str | None = None  # kept score rows (incremental builds)

    def files(self) -> list[str]:
        return [p for p in (self.index, self.ids, self.extra_index, self.h_index,
                            self.bi_index, self.scores) if p is not None]


@dataclass(frozen=True)
class Segment:
    """A run of dimensions of the extra index: "h" (anchor-query scores) or "bi"."""

    name: str
    dim: int


@dataclass(frozen=True)
class IndexInfo:
    factory: str
    dim: int
    metric: str
    label_shift: int
    g_file: str
    shards: tuple[ShardEntry, ...]
    bytes: int
    extra_bytes: dict[str, int] = field(default_factory=dict)
    extra_layout: tuple[Segment, ...] = ()  # the extra index's segments, in order


@dataclass(frozen=True)
class Baseline:
    name: str
    recall: dict[str, float]


@dataclass(frozen=True)
class PoolInfo:
    """Pooled validation: what each test query's pool held, what scoring it cost, and the
    audit's estimate of the true top-k items it missed (per figure, summed over the reporting
    queries: estimate and 95% interval)."""

    depth: int  # each method's ranking past its largest budget, and the bi-encoder's top items
    audit_items: int
    pairs: int  # exact-model pairs validation scored
    pairs_per_query: float
    mean_pool_size: float
    misses: dict[str, tuple[float, float, float]]  # "k@budget" -> (estimate, low, high)


@dataclass(frozen=True)
class Validation:
    n_test: int  # test queries reported on
    min_recall: dict[str, float]
    recall: dict[str, float]
    passed: bool
    failures: tuple[str, ...]
    recall_exact_search: dict[str, float] = field(default_factory=dict)
    index_recall_vs_exact: dict[str, float] = field(default_factory=dict)
    baseline: Baseline | None = None
    index: str = ""
    min_lift_over_baseline: float | None = None
    # format 4: how the test queries' exact top items were known ("exact": scored against
    # every item; "pooled": the top of a pool, `pool`), and why
    ground_truth: str = "exact"
    ground_truth_why: str = ""
    pool: PoolInfo | None = None
    # the served search's figures: a 95% interval over the reporting queries, and (pooled) the
    # interval that also holds what the pool may have missed
    recall_interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    recall_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ServedSearch:
    """The search a version answers with when the caller names none."""

    method: str  # curindex.search.methods.METHODS
    rounds: int
    seed: str  # "anchors" or "bi-encoder"
    seed_size: int
    budget: int  # the default budget (the objective's)


@dataclass(frozen=True)
class MethodFigures:
    """One method at its chosen parameters, measured on the reporting test queries."""

    method: str
    rounds: int
    seed_size: int
    recall: dict[str, float]
    served: bool = False


@dataclass(frozen=True)
class Candidate:
    """One candidate search on the tuning queries: its objective, and its paired difference
    to the best candidate (mean and standard error over the tuning queries)."""

    method: str
    rounds: int
    seed_size: int
    objective: float
    below_best: float
    below_best_se: float
    measurably_worse: bool
    within_margin: bool = False  # may serve (format 4: the practical-margin rule)


@dataclass(frozen=True)
class Selection:
    objective: tuple[str, ...]  # the figures whose mean is maximised
    n_tune: int
    tune_ids: tuple[str, ...]
    reason: str
    candidates: tuple[Candidate, ...]
    # of the tuning queries, how many were made from items (``[validate] synthetic_tuning``)
    synthetic: int = 0


@dataclass(frozen=True)
class BudgetChoice:
    """The search served at one validated budget (and above it, up to the next one), chosen
    on the mean of every k figure at that budget on the tuning queries."""

    budget: int
    method: str
    rounds: int
    seed_size: int
    objective: float  # its mean on the tuning queries
    reason: str
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class SearchInfo:
    default: ServedSearch
    methods: tuple[MethodFigures, ...] = ()
    selection: Selection | None = None
    # format 4: the search served at each validated budget (empty: `default` at every budget)
    by_budget: tuple[BudgetChoice, ...] = ()


@dataclass(frozen=True)
class Incremental:
    base: str
    new: int
    changed: int
    deleted: int
    unchanged: int
    touched_shards: tuple[int, ...]
    shards_written: tuple[int, ...]
    shards_shared: tuple[int, ...]


@dataclass(frozen=True)
class Manifest:
    format: int
    version: str
    created_at: str
    curindex_version: str
    config: BuildConfig
    config_source: str
    scorer: ScorerInfo
    anchors: AnchorsInfo
    counts: Counts
    factorization: Factorization
    index: IndexInfo
    validation: Validation
    timings_s: dict[str, float]
    files: dict[str, FileRef]
    references: dict[str, Reference] = field(default_factory=dict)
    report_dir: str | None = None
    incremental: Incremental | None = None
    search: SearchInfo | None = None  # None: built before builds chose (serves plain CUR)
    score_progress: tuple[ProgressSample, ...] = ()  # this run's score stage, over time
    plan: BuildPlan | None = None  # what the build expected before it ran (curindex.ops.plan)
    sparse: SparseInfo | None = None  # a sparse build's index (None: a dense one)

    @classmethod
    def from_dict(cls, doc: Any) -> Manifest:
        """Read a manifest document of any known format (upgraded to this one)."""
        version = doc.get("version", "?") if isinstance(doc, dict) else "?"
        where = f"version {version}: manifest"
        if not isinstance(doc, dict):
            raise IntegrityError(f"{where} is not a JSON object")
        fmt = doc.get("format")
        if type(fmt) is not int or fmt < 1:
            raise IntegrityError(f"{where}: 'format' must be a positive int, got {fmt!r}")
        if fmt > FORMAT:
            raise IntegrityError(
                f"{where} has format {fmt}; this curindex reads formats up to {FORMAT}: "
                "upgrade curindex to read it")
        for upgrade in _UPGRADES[fmt - 1:]:
            doc = upgrade(doc)
        return load(cls, doc, where)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this manifest."""
        return dump(self)

    @property
    def scorer_config(self) -> dict[str, Any]:
        """The recorded `[scorer]` settings, as data (see `search.trusted_scorer_config`)."""
        return dataclasses.asdict(self.config.scorer)



def read_manifest(store: Any, version: str) -> Manifest:
    """The typed manifest of a committed version of `store` (a ``curindex.store.Store``)."""
    return Manifest.from_dict(store.read_manifest(version))


def load_section(cls: type, value: Any, where: str) -> Any:
    """One section of a manifest document, typed (IntegrityError naming `where`)."""
    return load(cls, value, where)


def body(**sections: Any) -> dict[str, Any]:
    """The manifest document a build commits (the store adds the envelope), checked by reading
    it back as a Manifest with a placeholder envelope, so a malformed section fails the commit,
    not a later reader."""
    doc = {"format": FORMAT, **{k: dump(v) for k, v in sections.items()}}
    Manifest.from_dict({**doc, "version": "uncommitted", "created_at": "", "files": {}})
    return doc


def _upgrade_1(doc: dict) -> dict:
    """Format 1 -> 2: the same content, read into the typed sections."""
    return {**doc, "format": 2}


def _upgrade_2(doc: dict) -> dict:
    """Format 2 -> 3: the config's adaptive / biencoder switches become [index] methods (what
    they built, stored in float32) and [validate] baseline goes (the baseline is a method)."""
    config = dict(doc.get("config") or {})
    index = dict(config.get("index") or {})
    adaptive, bi = index.pop("adaptive", False), index.pop("biencoder", False)
    if "methods" not in index:
        index["methods"] = (["cur"] + (["adaptive"] if adaptive else [])
                            + (["bi-seeded"] if adaptive and bi else [])
                            + (["bi-rerank"] if bi else []))
        index.setdefault("encoding", "float32")
    validate = {k: v for k, v in (config.get("validate") or {}).items() if k != "baseline"}
    return {**doc, "format": 3, "config": {**config, "index": index, "validate": validate}}


def _upgrade_3(doc: dict) -> dict:
    """Format 3 -> 4: nothing to change (every version before 4 is dense, and the split of its
    pairs is unknown)."""
    return {**doc, "format": 4}


_UPGRADES = (_upgrade_1, _upgrade_2, _upgrade_3)
