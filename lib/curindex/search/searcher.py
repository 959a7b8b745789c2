"""Query-time search over a published version.

``Searcher.search(queries, k=, budget=)`` answers with the version's served search: the method
and parameters its build chose on held-out queries and validated (``manifest.search``; a
version built before builds chose serves plain CUR). Explicit arguments (``method``,
``rounds``, ``seed``, ``seed_size``) override it. Every method spends exactly ``budget``
exact-model calls per query (fewer when the corpus is smaller) and returns the top k items of
everything it scored, by exact score; the methods themselves are ``curindex.search.methods``, run
here over the version's faiss shards.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from curindex.config import ScorerConfig
from curindex.errors import ScorerError
from curindex.manifest import Manifest, ServedSearch, read_manifest
from curindex.scoring.base import Scorer, build_scorer, checked_scores, fingerprint_for
from curindex.search.methods import Ask, Plan, SearchSpec, ranked, run_plans
from curindex.search.reader import VersionShards
from curindex.store import Store

# A version built before builds chose their search serves plain CUR at this default budget.
LEGACY_SEARCH = ServedSearch(method="cur", rounds=1, seed="anchors", seed_size=0, budget=200)
DEFAULT_MAX_BUDGET = 10_000  # exact-model calls one query may ask for (Searcher.open max_budget)

# Where a reader lists the `module:callable` scorer targets it allows (comma-separated).
ALLOWED_TARGETS_ENV = "CURINDEX_ALLOWED_SCORERS"


def trusted_scorer_config(recorded: dict, *, version: str, scorer_target: str | None = None
                          ) -> ScorerConfig:
    """The scorer config a reader may build from a manifest's recorded `[scorer]` settings.

    A manifest is data anyone with write access to the store can edit, so nothing in it may
    choose code to run: a built-in kind is built as recorded, while a `callable` scorer is built
    only when its target is the `scorer_target` the caller passes or is listed in
    ``$CURINDEX_ALLOWED_SCORERS``. The recorded target is only compared with those, as a
    string; nothing is imported before the check passes. Raises ScorerError otherwise.
    """
    from curindex.config import SCORER_KINDS

    if not isinstance(recorded, dict) or recorded.get("kind") not in SCORER_KINDS:
        kind = recorded.get("kind") if isinstance(recorded, dict) else recorded
        raise ScorerError(f"version {version}: the manifest names scorer kind {kind!r}, which "
                          f"is not one of {SCORER_KINDS}")
    known = {f.name for f in dataclasses.fields(ScorerConfig)}
    if set(recorded) - known:
        raise ScorerError(f"version {version}: the manifest's scorer settings hold unknown "
                          f"keys {sorted(set(recorded) - known)}")
    if recorded["kind"] == "callable":
        target = recorded.get("target", "")
        allowed = {t.strip() for t in os.environ.get(ALLOWED_TARGETS_ENV, "").split(",")}
        if scorer_target is not None:
            allowed.add(scorer_target)
        if not target or target not in allowed:
            raise ScorerError(
                f"version {version} was built with the callable scorer {target!r}; a reader "
                f"imports a callable only when it is allowed: pass scorer_target={target!r} "
                f"(curindex search --scorer-target) or list it in ${ALLOWED_TARGETS_ENV}")
    try:
        return ScorerConfig(**recorded)
    except TypeError as e:
        raise ScorerError(f"version {version}: the manifest's scorer settings are malformed: "
                          f"{e}") from e


@dataclass(frozen=True)
class SearchResult:
    query: str
    ids: list[str]  # best first
    scores: np.ndarray  # exact scores, float32, [len(ids)]
    texts: list[str]
    model_calls: int  # exact-model calls spent on this query
    method: str = ""  # the search that answered, e.g. "bi-seeded (4 rounds, seed 50)"


class Searcher:
    """A published (or named) version opened for search. Build with ``Searcher.open``."""

    def __init__(self, *, store: Store | None, version: str, manifest: Manifest | None,
                 scorer: Scorer, anchor_ids: list[str], anchor_texts: list[str],
                 shards: VersionShards, anchor_columns: np.ndarray | None = None,
                 detached: Sequence[str] = (), served: ServedSearch = LEGACY_SEARCH,
                 rcond: float = 1e-3, max_budget: int = DEFAULT_MAX_BUDGET) -> None:
        self.store, self.version, self.manifest = store, version, manifest
        self.scorer, self.shards, self.served = scorer, shards, served
        self.anchor_ids, self.anchor_texts = anchor_ids, anchor_texts
        self.n_items, self.rcond, self.max_budget = shards.n_items, rcond, max_budget
        # Anchor items deleted or changed in the corpus since the anchors were chosen (an
        # incremental build): still scored (their stored texts make the query's vector), never
        # results; a changed one is retrieved from the shards like any item.
        gone = set(detached)
        self._live = np.array([a not in gone for a in anchor_ids], dtype=bool)
        listed = shards.labels_of([a for a in anchor_ids if a not in gone])
        self._anchor_labels = frozenset(listed.values())
        # [k_q, k_i] anchor-query scores of the anchor items (adaptive rounds)
        self._anchor_columns = anchor_columns

    @classmethod
    def open(cls, store_uri: str, version: str = "current", *,
             scorer_path: str | None = None, scorer_target: str | None = None,
             verify: bool = True, ivf_in_memory: bool = False,
             max_budget: int = DEFAULT_MAX_BUDGET, device: str = "auto") -> Searcher:
        """Open `version` ("current" = the published one) of the store at `store_uri`.

        The scorer is rebuilt from the manifest's config (`scorer_path` overrides where the
        model lives on this machine); its fingerprint must match the one the index was built
        with, else ScorerError. A `callable` scorer is imported only when the caller allows its
        target (`scorer_target`, or ``$CURINDEX_ALLOWED_SCORERS``): see `trusted_scorer_config`.
        With `verify`, every file's size and sha256 are checked against the manifest first
        (StoreError naming a corrupt or truncated file). Shards are memory-mapped when the
        store is local (id maps too), so opening costs about the same for any corpus size.
        With `ivf_in_memory`, IVF shards from the build's one trained quantizer are copied into
        one in-memory IVF index (RAM for every shard's lists, the latency of one index; see
        `shardindex.ivf_in_memory`). `max_budget` caps the exact-model calls one query may ask
        for. `device` places the scorer's model on this machine ("auto": a GPU when there is
        one; "cpu", "cuda", "cuda:N"; see `curindex.scoring.device`), whatever the build used.
        """
        store = Store.open(store_uri)
        vid = store.resolve(version)
        if verify:
            store.verify(vid)
        manifest = read_manifest(store, vid)
        scfg = trusted_scorer_config(manifest.scorer_config, version=vid,
                                     scorer_target=scorer_target)
        scfg = dataclasses.replace(scfg, device=device)  # the build's GPUs are not this machine's
        if scorer_path is not None:
            scfg = dataclasses.replace(scfg, path=scorer_path)
        fp = fingerprint_for(scfg)
        if fp != manifest.scorer.fingerprint:
            raise ScorerError(
                f"version {vid}: the scorer here has fingerprint {fp}, the index was built with "
                f"{manifest.scorer.fingerprint} (different weights or settings)"
            )
        anchors = pq.read_table(store.local_path(vid, manifest.anchors.items_file))
        shards = VersionShards.open(store, vid, manifest, ivf_in_memory=ivf_in_memory)
        anchor_columns = None
        if shards.has("h"):
            rows = np.load(store.local_path(vid, manifest.anchors.scores_file),
                           allow_pickle=False)  # [k_i, k_q + n_test]
            anchor_columns = rows[:, : manifest.anchors.n_queries].T.astype(np.float64)
        served = manifest.search.default if manifest.search is not None else LEGACY_SEARCH
        return cls(store=store, version=vid, manifest=manifest,
                   scorer=build_scorer(scfg, fp),
                   anchor_ids=anchors.column("id").to_pylist(),
                   anchor_texts=anchors.column("text").to_pylist(), shards=shards,
                   anchor_columns=anchor_columns, detached=manifest.anchors.detached,
                   served=served, rcond=manifest.factorization.rcond, max_budget=max_budget)

    @property
    def adaptive(self) -> bool:
        """Whether this version supports adaptive search (rounds > 1)."""
        return self.shards.has("h")

    def spec(self, *, method: str | None = None, rounds: int | None = None,
             seed: str | None = None, seed_size: int | None = None) -> SearchSpec:
        """The search `search` runs with these arguments: the served one when none is given.
        A method named without its parameters takes the served search's when it is the same
        method, else 4 rounds and a seed of 50 items."""
        served = self.served
        if method is not None:
            if method in ("cur", "bi-rerank"):
                return SearchSpec(method)
            same = served.method == method
            r = rounds or (served.rounds if same else 4)
            size = seed_size or (served.seed_size if same else 50)
            return SearchSpec(method, r, size if method == "bi-seeded" else 0)
        if rounds is None and seed is None and seed_size is None:
            return SearchSpec(served.method, served.rounds, served.seed_size)
        return SearchSpec.from_args(rounds=rounds or 1, seed=seed or "anchors",
                                    seed_size=seed_size or 0)

    def search(self, queries: Sequence[str], *, k: int = 10, budget: int | None = None,
               method: str | None = None, rounds: int | None = None, seed: str | None = None,
               seed_size: int | None = None, rcond: float | None = None) -> list[SearchResult]:
        """Top-k items per query by exact score, spending at most `budget` model calls each.

        With no method arguments the version's served search answers (its method, rounds,
        seed size and, when `budget` is not given, budget). `method` ("cur", "adaptive",
        "bi-seeded", "bi-rerank"), or the older `rounds` / `seed` ("anchors", "bi-encoder") /
        `seed_size`, choose another; methods other than plain CUR need the version's extra
        indexes (`[index] methods`). `rcond` is the adaptive rounds' least-squares cutoff
        (default: the cutoff the build inverted U with).
        """
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings, not one string: "
                            "search([query]) searches one query")
        queries = list(queries)
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"query {i} is empty: {q!r}; every query needs text")
        budget = self.served.budget if budget is None else budget
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 1 <= budget <= self.max_budget:
            raise ValueError(f"budget {budget} is outside 1..{self.max_budget} (the reader's "
                             "max_budget)")
        spec = self.spec(method=method, rounds=rounds, seed=seed, seed_size=seed_size)
        for need in spec.needs:
            if not self.shards.has(need):
                raise ValueError(f"version {self.version} has no {need!r} shards for "
                                 f"{spec.describe()} search: build it with that method in "
                                 "[index] methods (older configs: adaptive = true, "
                                 "biencoder = true)")
        if not queries:
            return []
        plans = self._plans(queries, spec, budget)
        run_plans(plans, _Retriever(self, queries), anchor_columns=self._anchor_columns,
                  rcond=self.rcond if rcond is None else rcond, cos=self.shards.has("hb"))
        out = []
        for q, p in zip(queries, plans, strict=True):
            anchors = spec.seed == "anchors"
            pool = [*(self._live_anchor_keys() if anchors else []), *p.keys]
            pool_exact = np.concatenate([p.anchor_exact[self._live] if anchors else [], p.exact])
            keys, scores = ranked(pool, pool_exact, k)
            items = [self._item(key) for key in keys]
            out.append(SearchResult(query=q, ids=[i for i, _ in items], scores=scores,
                                    texts=[t for _, t in items],
                                    model_calls=len(p.anchor_exact) + len(p.keys),
                                    method=spec.describe()))
        return out

    def _plans(self, queries: list[str], spec: SearchSpec, budget: int) -> list[Plan]:
        k_i = len(self.anchor_ids)
        sizes = spec.sizes(budget, k_i=k_i, n_items=self.n_items,
                           n_anchors_listed=len(self._anchor_labels))
        if spec.seed == "anchors":
            c = checked_scores(self.scorer.score_block(queries, self.anchor_texts),
                               len(queries), k_i, where="the anchor items")  # [n_q, k_i]
            return [Plan(i, spec, budget, sizes, c[i], c[i], self._anchor_labels)
                    for i in range(len(queries))]
        from curindex.scoring.biencoder import get_biencoder

        x = get_biencoder().encode(queries)  # [n_q, dim]
        return [Plan(i, spec, budget, sizes, x[i], np.zeros(0), frozenset())
                for i in range(len(queries))]

    def _live_anchor_keys(self) -> list:
        # Anchor items enter the pool by id (not label): a keyed tuple keeps them apart.
        return [("anchor", j) for j in np.flatnonzero(self._live)]

    def _item(self, key) -> tuple[str, str]:
        if isinstance(key, tuple):
            return self.anchor_ids[key[1]], self.anchor_texts[key[1]]
        return self.shards.item(key)


class _Retriever:
    """The methods' retriever over a version's faiss shards; exact scores from the scorer."""

    def __init__(self, searcher: Searcher, queries: list[str]) -> None:
        self.s, self.queries = searcher, queries

    def retrieve(self, asks: Sequence[Ask]) -> list[tuple[list[int], np.ndarray]]:
        found: list[list[int]] = [[] for _ in asks]
        shards = self.s.shards
        for physical in {shards.locate(a.space)[0] for a in asks}:
            which = [i for i, a in enumerate(asks) if shards.locate(a.space)[0] == physical]
            index = shards.indexes[physical]
            x = np.zeros((len(which), index.d), dtype=np.float32)
            for row, i in enumerate(which):  # a space is a run of the index's dimensions
                _, offset, dim = shards.locate(asks[i].space)
                x[row, offset:offset + dim] = asks[i].vector
            want = min(max(asks[i].n + len(asks[i].seen) for i in which), self.s.n_items)
            dist, lab = index.search(x, want)
            for row, i in enumerate(which):
                found[i] = self._best(dist[row], lab[row], asks[i].n, asks[i].seen)
        out = []
        for a, labels in zip(asks, found, strict=True):
            texts = [self.s.shards.item(lab)[1] for lab in labels]
            exact = (checked_scores(self.s.scorer.score_block([self.queries[a.query]], texts),
                                    1, len(texts), where="the candidates")[0]
                     if texts else np.zeros(0, dtype=np.float32))
            out.append((labels, exact))
        return out

    def _best(self, dist: np.ndarray, labels: np.ndarray, n: int, seen: frozenset) -> list[int]:
        """The n best unseen labels, equal estimates by item id (< 0: fewer hits, IVF)."""
        hits = sorted(((float(d), int(lab)) for d, lab in zip(dist, labels, strict=True)
                       if lab >= 0 and lab not in seen), key=lambda h: -h[0])
        out: list[int] = []
        i = 0
        while i < len(hits) and len(out) < n:
            j = i
            while j < len(hits) and hits[j][0] == hits[i][0]:
                j += 1
            group = hits[i:j]
            if len(group) > 1:
                group.sort(key=lambda h: self.s.shards.item(h[1])[0])
            out += [lab for _, lab in group]
            i = j
        return out[:n]

    def columns(self, keys: Sequence[int]) -> dict[int, np.ndarray]:
        rows = self.s.shards.columns(list(keys)).astype(np.float64)
        return dict(zip(keys, rows, strict=True))
