"""Query-time search over a published version.

For each query: score it exactly against the k_i anchor items (its vector ``c``), retrieve the
``budget - k_i`` best non-anchor items by ``c . e`` from the shards, score those exactly, and
return the top k of candidates and anchor items by exact score. Exact-model calls per query:
exactly ``budget`` (or fewer when the corpus is smaller).

With ``rounds=R > 1`` (a version built with ``[index] adaptive = true``) the retrievals are
spread over R rounds and every round after the first re-solves the query on everything scored
so far (``curindex.adaptive``), searching the H shards (each item's anchor-query scores).
With ``seed="bi-encoder"`` (a version built with ``[index] biencoder = true`` too) the first
round is the bi-encoder's top items instead of the anchor items plus CUR candidates: the whole
budget goes to items near the query, and the later rounds re-solve on them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow.parquet as pq

from curindex.adaptive import adaptive_rounds, round_sizes
from curindex.config import ScorerConfig
from curindex.errors import ScorerError, StoreError
from curindex.manifest import Manifest, read_manifest
from curindex.scoring.base import Scorer, build_scorer, checked_scores, fingerprint_for
from curindex.shardindex import (
    EXTRAS,
    merge_shards,
    read_index,
    set_search_params,
    shard_labels,
    split_labels,
)
from curindex.store import Store

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


class Searcher:
    """A published (or named) version opened for search. Build with ``Searcher.open``."""

    SEEDS = ("anchors", "bi-encoder")

    def __init__(self, *, store: Store, version: str, manifest: Manifest | None, scorer: Scorer,
                 anchor_ids: list[str], anchor_texts: list[str], shards: list[tuple],
                 extras: dict[str, list] | None = None,
                 anchor_columns: np.ndarray | None = None,
                 detached: Sequence[str] = (), ivf_in_memory: bool = False) -> None:
        self.store, self.version, self.manifest = store, version, manifest
        self.scorer = scorer
        self.anchor_ids, self.anchor_texts = anchor_ids, anchor_texts
        self._shards = shards  # [(shard number, faiss index, item ids, texts)]
        self._by_shard = {s[0]: s for s in shards}
        self.n_items = sum(len(s[2]) for s in shards)
        # Anchor items deleted or changed in the corpus since the anchors were chosen (an
        # incremental build): still scored (their stored texts make the query's vector), never
        # results; a changed one is retrieved from the shards like any item.
        gone = set(detached)
        self._live = np.array([a not in gone for a in anchor_ids], dtype=bool)
        anchor_set = {a for a, live in zip(anchor_ids, self._live, strict=True) if live}
        self._anchor_labels: set[int] = set()
        for num, _, ids, _ in shards:
            rows = [row for row, iid in enumerate(ids) if iid in anchor_set]
            self._anchor_labels.update(shard_labels(num, len(ids))[rows].tolist())
        # One faiss index over every shard, hits merged by score, labels kept (they encode
        # shard and row). IVF shards sharing the build's trained quantizer are
        # coarse-quantized once per query, not once per shard (with `ivf_in_memory`, copied
        # into one in-memory IVF index); others are searched in parallel.
        self._index = merge_shards([index for _, index, _, _ in shards], in_memory=ivf_in_memory)
        # Extra indexes, same labels: "h" (anchor-query scores per item) and "bi" (bi-encoder
        # embeddings), per shard and merged; and the anchor items' anchor-query scores
        # [k_q, k_i] (for adaptive search).
        self._extras = {name: (dict(zip((s[0] for s in shards), parts, strict=True)),
                               merge_shards(parts)) for name, parts in (extras or {}).items()}
        self._anchor_columns = anchor_columns

    @classmethod
    def open(cls, store_uri: str, version: str = "current", *,
             scorer_path: str | None = None, scorer_target: str | None = None,
             verify: bool = True, ivf_in_memory: bool = False) -> Searcher:
        """Open `version` ("current" = the published one) of the store at `store_uri`.

        The scorer is rebuilt from the manifest's config (`scorer_path` overrides where the
        model lives on this machine); its fingerprint must match the one the index was built
        with, else ScorerError. A `callable` scorer is imported only when the caller allows its
        target (`scorer_target`, or ``$CURINDEX_ALLOWED_SCORERS``): see `trusted_scorer_config`.
        With `verify`, every file's size and sha256 are checked against the manifest first
        (StoreError naming a corrupt or truncated file). Flat shards are memory-mapped when the
        store is local. With `ivf_in_memory`, IVF shards from the build's one trained quantizer
        are copied into one in-memory IVF index (RAM for every shard's lists, the latency of one
        index; see `shardindex.ivf_in_memory`).
        """
        store = Store.open(store_uri)
        vid = store.resolve(version)
        if verify:
            store.verify(vid)
        manifest = read_manifest(store, vid)
        scfg = trusted_scorer_config(manifest.scorer_config, version=vid,
                                     scorer_target=scorer_target)
        if scorer_path is not None:
            scfg = dataclasses.replace(scfg, path=scorer_path)
        fp = fingerprint_for(scfg)
        if fp != manifest.scorer.fingerprint:
            raise ScorerError(
                f"version {vid}: the scorer here has fingerprint {fp}, the index was built with "
                f"{manifest.scorer.fingerprint} (different weights or settings)"
            )
        anchors = pq.read_table(store.local_path(vid, manifest.anchors.items_file))
        shards: list[tuple] = []
        extras: dict[str, list] = {}
        nprobe, ef = manifest.config.index.nprobe, manifest.config.index.ef_search
        for s in manifest.index.shards:
            index = read_index(store.local_path(vid, s.index))
            set_search_params(index, nprobe=nprobe, ef_search=ef)
            ids = pq.read_table(store.local_path(vid, s.ids), columns=["item_id", "text"])
            if index.ntotal != ids.num_rows or ids.num_rows != s.n_items:
                raise StoreError(
                    f"version {vid}: shard {s.index} holds {index.ntotal} vectors and "
                    f"{ids.num_rows} ids, the manifest says {s.n_items}"
                )
            shards.append((s.shard, index, ids.column("item_id").to_pylist(),
                           ids.column("text").to_pylist()))
            for name in EXTRAS:
                if (rel := s.extra(name)) is not None:
                    extra = read_index(store.local_path(vid, rel))
                    if extra.ntotal != s.n_items:
                        raise StoreError(f"version {vid}: {rel} holds "
                                         f"{extra.ntotal} vectors, the shard {s.n_items}")
                    extras.setdefault(name, []).append(extra)
        anchor_columns = None
        if "h" in extras:
            rows = np.load(store.local_path(vid, manifest.anchors.scores_file),
                           allow_pickle=False)  # [k_i, k_q + n_test]
            anchor_columns = rows[:, : manifest.anchors.n_queries].T.astype(np.float64)
        return cls(store=store, version=vid, manifest=manifest,
                   scorer=build_scorer(scfg, fp),
                   anchor_ids=anchors.column("id").to_pylist(),
                   anchor_texts=anchors.column("text").to_pylist(), shards=shards,
                   extras=extras, anchor_columns=anchor_columns,
                   detached=manifest.anchors.detached, ivf_in_memory=ivf_in_memory)

    @property
    def adaptive(self) -> bool:
        """Whether this version supports adaptive search (rounds > 1)."""
        return "h" in self._extras

    def search(self, queries: Sequence[str], *, k: int = 10, budget: int = 200,
               rounds: int = 1, seed: str = "anchors", seed_size: int = 0,
               rcond: float | None = None) -> list[SearchResult]:
        """Top-k items per query by exact score, spending at most `budget` model calls each.

        `rounds` > 1: adaptive search (needs a version built with `[index] adaptive = true`);
        `rcond` is its least-squares cutoff (default: the cutoff the build inverted U with).
        `seed="bi-encoder"` (needs `[index] biencoder = true`): round 1 scores the bi-encoder's
        top `seed_size` items (default 50) instead of the anchor items and their CUR candidates;
        the later rounds share the rest of the budget. With `rounds=1` round 1 takes the whole
        budget: bi-encoder retrieve-and-rerank.
        """
        k_i = len(self.anchor_ids)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if seed not in self.SEEDS:
            raise ValueError(f"seed must be one of {self.SEEDS}, got {seed!r}")
        if seed == "anchors" and budget <= k_i:
            raise ValueError(f"budget {budget} must exceed the {k_i} anchor items of this index")
        for need, name, key in ((rounds > 1, "h", "adaptive"),
                                (seed == "bi-encoder", "bi", "biencoder")):
            if need and name not in self._extras:
                raise ValueError(f"version {self.version} was built without [index] {key} = "
                                 f"true: it has no {name!r} shards for this search")
        queries = list(queries)
        if not queries:
            return []
        if seed == "anchors":
            c = checked_scores(self.scorer.score_block(queries, self.anchor_texts),
                               len(queries), k_i, where="the anchor items")  # [n_q, k_i]
            sizes = round_sizes(min(budget - k_i, self.n_items - len(self._anchor_labels)),
                                rounds)
            labels = self._retrieve(self._index, c, sizes[0],
                                    [set(self._anchor_labels) for _ in queries])
            pool_ids = [a for a, live in zip(self.anchor_ids, self._live, strict=True) if live]
            pool_texts = [t for t, live in zip(self.anchor_texts, self._live, strict=True) if live]
            pool_c = c[:, self._live]
            anchor_columns = self._anchor_columns
        else:
            from curindex.baseline import get_biencoder

            total = min(budget, self.n_items)
            first = total if rounds == 1 else min(seed_size or 50, total)
            sizes = [first, *(round_sizes(total - first, rounds - 1) if rounds > 1 else [])]
            x = get_biencoder().encode(queries)  # [n_q, dim]
            labels = self._retrieve(self._extras["bi"][1], x, first, [set() for _ in queries])
            c = pool_c = np.zeros((len(queries), 0), dtype=np.float32)
            pool_ids, pool_texts = [], []
            anchor_columns = np.zeros((self._h_dim(), 0)) if rounds > 1 else None
        found = [(lab, self._exact(q, lab)) for q, lab in zip(queries, labels, strict=True)]
        if rounds > 1:
            found = adaptive_rounds(
                first=found, later=sizes[1:], anchor_columns=anchor_columns, anchor_exact=c,
                rcond=self.manifest.factorization.rcond if rcond is None else rcond,
                retrieve=lambda w, n, seen: self._retrieve(
                    self._extras["h"][1], w, n,
                    [s | self._anchor_labels if seed == "anchors" else s for s in seen]),
                exact=lambda qi, lab: self._exact(queries[qi], lab),
                columns=self._h_columns)
        out = []
        for qi, (q, (lab, exact)) in enumerate(zip(queries, found, strict=True)):
            ids = pool_ids + [self._item(x)[0] for x in lab]
            texts = pool_texts + [self._item(x)[1] for x in lab]
            s = np.concatenate([pool_c[qi], exact]).astype(np.float32)
            top = np.argsort(-s, kind="stable")[:k]
            out.append(SearchResult(query=q, ids=[ids[i] for i in top], scores=s[top],
                                    texts=[texts[i] for i in top],
                                    model_calls=c.shape[1] + len(lab)))
        return out

    def _item(self, label: int) -> tuple[str, str]:
        """(id, text) of a faiss label."""
        shard, row = split_labels(label)
        _, _, sids, stexts = self._by_shard[int(shard)]
        return sids[int(row)], stexts[int(row)]

    def _exact(self, query: str, labels: list[int]) -> np.ndarray:
        """The query's exact scores on the items of `labels`: [len(labels)] float32."""
        if not labels:
            return np.zeros(0, dtype=np.float32)
        texts = [self._item(x)[1] for x in labels]
        return checked_scores(self.scorer.score_block([query], texts), 1, len(texts),
                              where="the candidates")[0]

    def _h_dim(self) -> int:
        return self._extras["h"][1].d

    def _h_columns(self, labels: list[int]) -> np.ndarray:
        """Anchor-query scores of the items of `labels`: [k_q, len(labels)]."""
        per_shard = self._extras["h"][0]
        shard, row = split_labels(np.asarray(labels, dtype=np.int64))
        out = np.empty((len(labels), self._h_dim()), dtype=np.float32)
        for j, (s, r) in enumerate(zip(shard, row, strict=True)):
            out[j] = faiss.downcast_index(per_shard[int(s)].index).reconstruct(int(r))
        return out.T.astype(np.float64)

    def _retrieve(self, index: faiss.Index, x: np.ndarray, n: int, seen: list[set[int]]
                  ) -> list[list[int]]:
        """The labels of the n best items per query by `index`'s inner product with the rows
        of `x`, leaving out the labels in `seen`."""
        if n <= 0:
            return [[] for _ in range(len(x))]
        want = min(n + max(map(len, seen)), self.n_items)  # enough to drop those seen
        _, lab = index.search(np.ascontiguousarray(x, dtype=np.float32), want)
        out = []
        for qi in range(len(x)):
            got = [label for label in lab[qi].tolist()
                   if label >= 0 and label not in seen[qi]][:n]  # < 0: fewer hits (IVF)
            out.append(got)
        return out

