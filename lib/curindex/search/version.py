"""One published (or named) version opened for search: everything a query reads, and the search.

``OpenVersion.search(queries, k=, budget=)`` answers with the version's served search: the
method and parameters its build chose on held-out queries and validated (``manifest.search``;
a version built before builds chose serves plain CUR). Explicit arguments (``method``,
``rounds``, ``seed``, ``seed_size``) override it; a method named without its parameters runs
at the parameters the build validated for it (``manifest.search.methods``). Every method spends
exactly ``budget`` exact-model calls per query (fewer when the corpus is smaller) and returns
the top k items of everything it scored, by exact score; the methods themselves are
``curindex.search.methods``, run here over the version's faiss shards.

An OpenVersion never changes once built: ``curindex.search.Searcher`` holds one and swaps in a
new one when the store publishes another version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from curindex.errors import ScorerError
from curindex.kinds.latent import LatentMaps
from curindex.kinds.sparse import Prior
from curindex.manifest import Manifest, ServedSearch, read_manifest
from curindex.quality.selection import served_at
from curindex.scoring.base import Scorer, build_scorer, checked_scores, fingerprint_for
from curindex.scoring.base import score_pairs as scored_pairs
from curindex.search.methods import Ask, Latent, Plan, SearchSpec, ranked, run_plans
from curindex.search.reader import (
    VersionShards,
    check_served,
    read_anchor_columns,
    read_anchor_items,
)
from curindex.search.trust import trusted_scorer_config
from curindex.store import Store

# A version built before builds chose their search serves plain CUR at this default budget.
LEGACY_SEARCH = ServedSearch(method="cur", rounds=1, seed="anchors", seed_size=0, budget=200)
DEFAULT_MAX_BUDGET = 10_000  # exact-model calls one query may ask for (Searcher.open max_budget)
# A multi-round method that a version's manifest records no parameters for (built before
# builds recorded every method's) runs with these.
FALLBACK_ROUNDS, FALLBACK_SEED_SIZE = 4, 50

# The bi-encoder is one per process (``get_biencoder``) and its tokenizer is not thread-safe.
_BIENCODER_LOCK = threading.Lock()


@dataclass(frozen=True)
class SearchResult:
    query: str
    ids: list[str]  # best first
    scores: np.ndarray  # exact scores, float32, [len(ids)]
    texts: list[str]
    model_calls: int  # exact-model calls spent on this query
    method: str = ""  # the search that answered, e.g. "bi-seeded (4 rounds, seed 50)"
    version: str = ""  # the version that answered


class SharedScorer:
    """A scorer shared by threads: one model call at a time.

    Scorers keep per-call state (a tokenizer's truncation setting, a query cache, torch's
    thread count) and use every core in each call, so concurrent calls would race and gain
    nothing; callers that want shared forward batches put their queries in one call instead.
    Versions with the same scorer fingerprint share one SharedScorer (one model in memory).
    """

    def __init__(self, scorer: Scorer) -> None:
        self.inner = scorer
        self.fingerprint: str = getattr(scorer, "fingerprint", "")
        self._lock = threading.Lock()

    def score_block(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        with self._lock, self._failures("a block"):
            return self.inner.score_block(queries, items)

    def score_pairs(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """Aligned pairs (``curindex.scoring.base.score_pairs``): float32 [len(queries)]."""
        with self._lock, self._failures("the candidates"):
            return scored_pairs(self.inner, queries, items, where="the candidates")

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """Any error the model raises, as a ScorerError (a model failure, not bad input)."""
        try:
            yield
        except ScorerError:
            raise
        except Exception as e:
            raise ScorerError(f"the scorer ({type(self.inner).__name__}) failed on {what}: "
                              f"{type(e).__name__}: {e}") from e

    def __repr__(self) -> str:
        return f"SharedScorer({type(self.inner).__name__}, {self.fingerprint})"


class OpenVersion:
    """A version opened for search. Build with ``OpenVersion.load`` (or ``Searcher.open``)."""

    def __init__(self, *, store: Store | None, version: str, manifest: Manifest | None,
                 scorer: Scorer, anchor_ids: list[str], anchor_texts: list[str],
                 shards: VersionShards, anchor_columns: np.ndarray | None = None,
                 detached: Sequence[str] = (), served: ServedSearch = LEGACY_SEARCH,
                 rcond: float = 1e-3, max_budget: int = DEFAULT_MAX_BUDGET,
                 prior: Prior | None = None) -> None:
        self.store, self.version, self.manifest = store, version, manifest
        self.scorer = scorer if isinstance(scorer, SharedScorer) else SharedScorer(scorer)
        self.shards, self.served = shards, served
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
        # A sparse version's rounds re-solve each query near its prior (its latent maps); it
        # has no anchor item.
        self._prior = prior
        if prior is not None:
            self._anchor_columns = np.zeros((prior.maps.dim, 0))

    @classmethod
    def load(cls, store: Store, version: str, *, scorer_path: str | None = None,
             scorer_target: str | None = None, verify: bool = True,
             ivf_in_memory: bool = False, max_budget: int = DEFAULT_MAX_BUDGET,
             device: str = "auto", scorer: SharedScorer | None = None) -> OpenVersion:
        """Open `version` (an id or "current") of `store`; see ``Searcher.open`` for the
        arguments and errors. `scorer`: a loaded scorer to reuse when its fingerprint is the
        version's (a refresh keeps the model it has)."""
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
        anchors = read_anchor_items(store, vid, manifest)
        shards = VersionShards.open(store, vid, manifest, ivf_in_memory=ivf_in_memory)
        anchor_columns, prior = None, None
        if manifest.sparse is not None:
            maps = LatentMaps.from_bytes(store.read_bytes(vid, manifest.sparse.maps_file),
                                         where=f"version {vid}: {manifest.sparse.maps_file}")
            prior = Prior(maps, manifest.config.sparse.prior_weight)
        elif shards.has("h"):
            anchor_columns = read_anchor_columns(store, vid, manifest)
        served = (check_served(vid, manifest.search.default) if manifest.search is not None
                  else LEGACY_SEARCH)
        if scorer is None or scorer.fingerprint != fp:
            scorer = SharedScorer(build_scorer(scfg, fp))
        return cls(store=store, version=vid, manifest=manifest, scorer=scorer,
                   anchor_ids=anchors.column("id").to_pylist(),
                   anchor_texts=anchors.column("text").to_pylist(), shards=shards,
                   anchor_columns=anchor_columns, detached=manifest.anchors.detached,
                   served=served, rcond=manifest.factorization.rcond, max_budget=max_budget,
                   prior=prior)

    @property
    def adaptive(self) -> bool:
        """Whether this version supports adaptive search (rounds > 1)."""
        return self.shards.has("h")

    def served_at(self, budget: int) -> ServedSearch:
        """The search this version serves at `budget`: the one its build chose for the largest
        validated budget at most `budget` (``quality.selection.served_at``); versions built
        before builds chose per budget serve their one search at every budget."""
        by = self.manifest.search.by_budget if self.manifest and self.manifest.search else ()
        if not by:
            return self.served
        choice = {c.budget: c for c in by}[served_at({c.budget: c.budget for c in by}, budget)]
        seed = "bi-encoder" if choice.method.startswith("bi-") else "anchors"
        return check_served(self.version, ServedSearch(
            method=choice.method, rounds=choice.rounds, seed=seed, seed_size=choice.seed_size,
            budget=self.served.budget))

    def spec(self, *, method: str | None = None, rounds: int | None = None,
             seed: str | None = None, seed_size: int | None = None,
             budget: int | None = None) -> SearchSpec:
        """The search `search` runs with these arguments: the one served at `budget` (the
        default budget when None) when none is given. A method named without its parameters
        takes those the build validated it at (the manifest's ``search.methods``; versions
        that record none: the served search's when it is the same method, else 4 rounds and a
        seed of 50 items)."""
        served = self.served_at(self.served.budget if budget is None else budget)
        if method is not None:
            if method in ("cur", "bi-rerank"):
                return SearchSpec(method)
            r, size = self._validated(method)
            return SearchSpec(method, rounds or r, (seed_size or size)
                              if method == "bi-seeded" else 0)
        if rounds is None and seed is None and seed_size is None:
            return SearchSpec(served.method, served.rounds, served.seed_size)
        return SearchSpec.from_args(rounds=rounds or 1, seed=seed or "anchors",
                                    seed_size=seed_size or 0)

    def _validated(self, method: str) -> tuple[int, int]:
        """(rounds, seed size) the build validated `method` at."""
        search = self.manifest.search if self.manifest is not None else None
        for m in search.methods if search is not None else ():
            if m.method == method:
                return m.rounds, m.seed_size
        if self.served.method == method:
            return self.served.rounds, self.served.seed_size
        return FALLBACK_ROUNDS, FALLBACK_SEED_SIZE

    def checked(self, queries: Sequence[str], *, k: int, budget: int | None, **how
                ) -> tuple[list[str], int, SearchSpec]:
        """(queries, budget, spec) of a search, or the ValueError (TypeError for one string)
        naming what this version refuses; `how`: the method arguments of `search`."""
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
        spec = self.spec(**how, budget=budget)
        for need in spec.needs:
            if not self.shards.has(need):
                raise ValueError(f"version {self.version} has no {need!r} shards for "
                                 f"{spec.describe()} search: build it with that method in "
                                 "[index] methods (older configs: adaptive = true, "
                                 "biencoder = true)")
        if spec.seed == "anchors" and budget <= len(self.anchor_ids):
            raise ValueError(f"budget {budget} must exceed the {len(self.anchor_ids)} anchor "
                             f"items of version {self.version} for {spec.describe()} search")
        return queries, budget, spec

    def search(self, queries: Sequence[str], *, k: int = 10, budget: int | None = None,
               method: str | None = None, rounds: int | None = None, seed: str | None = None,
               seed_size: int | None = None, rcond: float | None = None) -> list[SearchResult]:
        """Top-k items per query by exact score, spending at most `budget` model calls each.

        With no method arguments the version's served search answers (its method, rounds,
        seed size and, when `budget` is not given, budget). `method` ("cur", "adaptive",
        "bi-seeded", "bi-rerank"), or the older `rounds` / `seed` ("anchors", "bi-encoder") /
        `seed_size`, choose another; methods other than plain CUR need the version's extra
        indexes (`[index] methods`). `rcond` is the adaptive rounds' least-squares cutoff
        (default: the cutoff the build inverted U with). The exact-model calls of every query
        of a round go to the scorer in one call, so the queries share forward batches.
        """
        queries, budget, spec = self.checked(queries, k=k, budget=budget, method=method,
                                             rounds=rounds, seed=seed, seed_size=seed_size)
        if not queries:
            return []
        plans = self._plans(queries, spec, budget)
        latent = None if self._prior is None else Latent(
            self._prior.maps.alpha, self._prior.maps.beta, self._prior.weight)
        run_plans(plans, _Retriever(self, queries), anchor_columns=self._anchor_columns,
                  rcond=self.rcond if rcond is None else rcond, cos=self.shards.has("hb"),
                  latent=latent)
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
                                    method=spec.describe(), version=self.version))
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

        with _BIENCODER_LOCK:
            x = get_biencoder().encode(queries)  # [n_q, dim]
        priors = self._prior.vectors(x) if self._prior is not None else np.zeros((len(x), 0))
        return [Plan(i, spec, budget, sizes, x[i], np.zeros(0), frozenset(), prior=priors[i])
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

    def __init__(self, searcher: OpenVersion, queries: list[str]) -> None:
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
        # Every ask's candidates in one scorer call: the queries of a batch share its forward
        # batches (a cross-encoder) or its encodings of the items they have in common (MaxSim).
        texts = [[self.s.shards.item(lab)[1] for lab in labels] for labels in found]
        pair_queries = [self.queries[a.query] for a, t in zip(asks, texts, strict=True)
                        for _ in t]
        exact = scored_pairs(self.s.scorer, pair_queries, [x for t in texts for x in t],
                             where="the candidates")
        ends = np.cumsum([len(t) for t in texts])
        return list(zip(found, np.split(exact, ends[:-1]) if len(ends) else [], strict=True))

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
