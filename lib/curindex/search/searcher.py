"""The Searcher: a store's serving version opened for search, refreshed in place when the store
publishes another, shared by threads.

``Searcher.open(store_uri)`` opens the published version (``curindex.search.version``: the
search itself); ``refresh()`` opens the version CURRENT names now and swaps it in atomically;
``follow(every_s=)`` does that whenever a poll of CURRENT sees a new one; ``close()`` (or the
``with`` block) stops following and lets go of the version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from curindex.manifest import Manifest, ServedSearch
from curindex.search.follow import Follower, OnFailure
from curindex.search.methods import SearchSpec
from curindex.search.reader import VersionShards
from curindex.search.trust import ALLOWED_TARGETS_ENV, trusted_scorer_config
from curindex.search.version import (
    DEFAULT_MAX_BUDGET,
    LEGACY_SEARCH,
    OpenVersion,
    SearchResult,
    SharedScorer,
)
from curindex.store import Store

__all__ = ["ALLOWED_TARGETS_ENV", "DEFAULT_MAX_BUDGET", "LEGACY_SEARCH", "OpenVersion",
           "SearchResult", "Searcher", "trusted_scorer_config"]

log = logging.getLogger("curindex.search")


class Searcher:
    """The serving version of a store, opened for search. Build with ``Searcher.open``.

    Thread safety: one Searcher may be shared by any number of threads. A search reads the
    serving version once, when it starts, and finishes on it; ``refresh`` opens the next
    version beside it and swaps it in with one assignment, so every answer comes whole from one
    version (``SearchResult.version`` says which) and no search waits for a refresh. Model
    calls run one at a time (``SharedScorer``: a model call uses every core, and scorers are not
    thread-safe); queries that arrive together share the model best in one ``search`` call,
    which scores all their candidates of a round in one call (``curindex serve`` batches
    concurrent requests so). The attributes below (``version``, ``served``, ...) are the
    serving version's at the moment they are read; ``current`` gives all of them at once.
    """

    def __init__(self, current: OpenVersion, *, open_options: dict[str, Any] | None = None
                 ) -> None:
        """A Searcher serving `current`; `open_options`: the `OpenVersion.load` arguments a
        refresh opens the next version with (`Searcher.open` records its own)."""
        self._state: OpenVersion | None = current
        self._options = dict(open_options or {"max_budget": current.max_budget})
        self._refresh_lock = threading.Lock()
        self._followers: list[Follower] = []

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
        (IntegrityError naming a corrupt or truncated file). Shards are memory-mapped when the
        store is local (id maps too), so opening costs about the same for any corpus size.
        With `ivf_in_memory`, IVF shards from the build's one trained quantizer are copied into
        one in-memory IVF index (RAM for every shard's lists, the latency of one index; see
        `shardindex.ivf_in_memory`). `max_budget` caps the exact-model calls one query may ask
        for. `device` places the scorer's model on this machine ("auto": a GPU when there is
        one; "cpu", "cuda", "cuda:N"; see `curindex.scoring.device`), whatever the build used.
        Refreshes open later versions with the same settings.
        """
        options = {"scorer_path": scorer_path, "scorer_target": scorer_target,
                   "verify": verify, "ivf_in_memory": ivf_in_memory, "max_budget": max_budget,
                   "device": device}
        return cls(OpenVersion.load(Store.open(store_uri), version, **options),
                   open_options=options)

    # --- the serving version ------------------------------------------------------------------

    @property
    def current(self) -> OpenVersion:
        """The version serving now (RuntimeError once closed); it never changes itself."""
        state = self._state
        if state is None:
            raise RuntimeError("this Searcher is closed")
        return state

    @property
    def store(self) -> Store | None:
        return self.current.store

    @property
    def version(self) -> str:
        return self.current.version

    @property
    def manifest(self) -> Manifest | None:
        return self.current.manifest

    @property
    def served(self) -> ServedSearch:
        return self.current.served

    @property
    def scorer(self) -> SharedScorer:
        return self.current.scorer

    @property
    def shards(self) -> VersionShards:
        return self.current.shards

    @property
    def anchor_ids(self) -> list[str]:
        return self.current.anchor_ids

    @property
    def anchor_texts(self) -> list[str]:
        return self.current.anchor_texts

    @property
    def n_items(self) -> int:
        return self.current.n_items

    @property
    def rcond(self) -> float:
        return self.current.rcond

    @property
    def max_budget(self) -> int:
        return self.current.max_budget

    @property
    def adaptive(self) -> bool:
        """Whether the serving version supports adaptive search (rounds > 1)."""
        return self.current.adaptive

    def spec(self, *, method: str | None = None, rounds: int | None = None,
             seed: str | None = None, seed_size: int | None = None) -> SearchSpec:
        """The search `search` runs with these arguments (`OpenVersion.spec`)."""
        return self.current.spec(method=method, rounds=rounds, seed=seed, seed_size=seed_size)

    def search(self, queries: Sequence[str], *, k: int = 10, budget: int | None = None,
               method: str | None = None, rounds: int | None = None, seed: str | None = None,
               seed_size: int | None = None, rcond: float | None = None) -> list[SearchResult]:
        """Top-k items per query by exact score, at most `budget` model calls each, from the
        serving version (`OpenVersion.search` says how; every result names its version)."""
        return self.current.search(queries, k=k, budget=budget, method=method, rounds=rounds,
                                   seed=seed, seed_size=seed_size, rcond=rcond)

    # --- following the store ------------------------------------------------------------------

    def refresh(self, version: str = "current") -> str:
        """Serve `version` of the store (by default the one CURRENT names now); returns the
        version serving afterwards.

        The new version is opened (and verified, as `open` did) while the old one keeps
        answering, then swapped in with one assignment: searches under way finish on the
        version they started with, later ones run on the new one. Nothing is loaded when the
        store names the version serving, and the model is kept when the new version's scorer
        fingerprint is the same. A version that fails to open or verify (IntegrityError,
        VersionNotFoundError, ScorerError, ...) is logged and its error raised: the old version
        keeps serving. Refreshes run one at a time; RuntimeError once closed.
        """
        with self._refresh_lock:
            old = self.current
            if old.store is None:
                raise ValueError(f"this Searcher serves version {old.version} without its "
                                 "store: open it with Searcher.open to refresh it")
            try:
                vid = old.store.resolve(version)
                if vid == old.version:
                    return vid
                new = OpenVersion.load(old.store, vid, scorer=old.scorer, **self._options)
            except Exception as e:
                log.warning("store %s: version %r cannot serve (%s: %s); version %s keeps "
                            "serving", old.store.uri, version, type(e).__name__, e, old.version)
                raise
            if self._state is None:
                raise RuntimeError("this Searcher was closed during the refresh")
            self._state = new
            log.info("store %s: version %s serves (was %s)", old.store.uri, vid, old.version)
            return vid

    def follow(self, *, every_s: float = 5.0, max_backoff_s: float = 300.0,
               on_failure: OnFailure | None = None) -> Follower:
        """Poll the store's CURRENT every `every_s` seconds on a daemon thread and `refresh`
        when it names another version, until `close` (or the Follower's `stop`). A version
        that fails is logged, passed to `on_failure(version, error)`, and tried again after a
        back-off (`curindex.search.follow`); the version serving keeps answering."""
        store = self.current.store
        if store is None:
            raise ValueError("a Searcher without its store cannot follow it")
        follower = Follower(current=lambda: store.resolve("current"),
                            serving=lambda: self.version, refresh=self.refresh,
                            every_s=every_s, max_backoff_s=max_backoff_s,
                            on_failure=on_failure)
        self._followers.append(follower)
        return follower.start()

    def close(self) -> None:
        """Stop following and let go of the version (its memory maps close once the searches
        under way, which keep it, end). Searching afterwards raises RuntimeError; closing
        twice is harmless."""
        for follower in self._followers:
            follower.stop()
        self._followers.clear()
        self._state = None

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._state
        if state is None:
            return "Searcher(closed)"
        s = state.served
        scorer = (state.manifest.scorer.kind if state.manifest is not None
                  else type(state.scorer.inner).__name__)
        search = f"{state.spec().describe()} at budget {s.budget}"
        return (f"Searcher(store={state.store.uri if state.store else None!r}, "
                f"version={state.version!r}, search={search!r}, "
                f"scorer={f'{scorer} {state.scorer.fingerprint}'!r})")

