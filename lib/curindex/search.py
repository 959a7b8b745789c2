"""Query-time search over a published version.

For each query: score it exactly against the k_i anchor items (its vector ``c``), retrieve the
``budget - k_i`` best non-anchor items by ``c . e`` from the shards, score those exactly, and
return the top k of candidates and anchor items by exact score. Exact-model calls per query:
exactly ``budget`` (or fewer when the corpus is smaller).

With ``rounds=R > 1`` (a version built with ``[index] adaptive = true``) the retrievals are
spread over R rounds and every round after the first re-solves the query on everything scored
so far (``curindex.adaptive``), searching the H shards (each item's anchor-query scores).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow.parquet as pq

from curindex.adaptive import adaptive_rounds, round_sizes
from curindex.config import ScorerConfig
from curindex.errors import ScorerError, StoreError
from curindex.scoring import Scorer, build_scorer, checked_scores, fingerprint_for
from curindex.shardindex import read_index, set_search_params, split_labels
from curindex.store import Store


@dataclass(frozen=True)
class SearchResult:
    query: str
    ids: list[str]  # best first
    scores: np.ndarray  # exact scores, float32, [len(ids)]
    texts: list[str]
    model_calls: int  # exact-model calls spent on this query


class Searcher:
    """A published (or named) version opened for search. Build with ``Searcher.open``."""

    def __init__(self, *, store: Store, version: str, manifest: dict, scorer: Scorer,
                 anchor_ids: list[str], anchor_texts: list[str], shards: list[tuple],
                 h_shards: list | None = None, anchor_columns: np.ndarray | None = None
                 ) -> None:
        self.store, self.version, self.manifest = store, version, manifest
        self.scorer = scorer
        self.anchor_ids, self.anchor_texts = anchor_ids, anchor_texts
        self._anchor_set = set(anchor_ids)
        self._shards = shards  # [(shard number, faiss index, item ids, texts)]
        self._by_shard = {s[0]: s for s in shards}
        self.n_items = sum(len(s[2]) for s in shards)
        # One threaded faiss index over every shard: searched in parallel, merged by score,
        # labels kept (they encode shard and row).
        self._index = faiss.IndexShards(len(anchor_ids), True, False)
        for _, index, _, _ in shards:
            self._index.add_shard(index)
        # Adaptive search: per shard the H index (same labels), merged the same way, and the
        # anchor items' anchor-query scores [k_q, k_i].
        self._h_shards = {s: h for (s, *_), h in zip(shards, h_shards or [], strict=False)}
        self._anchor_columns = anchor_columns
        self._h_index = None
        if h_shards:
            self._h_index = faiss.IndexShards(h_shards[0].d, True, False)
            for h in h_shards:
                self._h_index.add_shard(h)

    @classmethod
    def open(cls, store_uri: str, version: str = "current", *,
             scorer_path: str | None = None, verify: bool = True) -> Searcher:
        """Open `version` ("current" = the published one) of the store at `store_uri`.

        The scorer is rebuilt from the manifest's config (`scorer_path` overrides where the
        model lives on this machine); its fingerprint must match the one the index was built
        with, else ScorerError. With `verify`, every file's size and sha256 are checked against
        the manifest first (StoreError naming a corrupt or truncated file). Flat shards are
        memory-mapped when the store is local.
        """
        store = Store.open(store_uri)
        vid = store.resolve(version)
        if verify:
            store.verify(vid)
        manifest = store.read_manifest(vid)
        scfg = ScorerConfig(**manifest["config"]["scorer"])
        if scorer_path is not None:
            scfg = ScorerConfig(**{**manifest["config"]["scorer"], "path": scorer_path})
        fp = fingerprint_for(scfg)
        if fp != manifest["scorer"]["fingerprint"]:
            raise ScorerError(
                f"version {vid}: the scorer here has fingerprint {fp}, the index was built with "
                f"{manifest['scorer']['fingerprint']} (different weights or settings)"
            )
        anchors = pq.read_table(store.local_path(vid, manifest["anchors"]["items_file"]))
        shards, h_shards = [], []
        nprobe, ef = manifest["config"]["index"]["nprobe"], manifest["config"]["index"]["ef_search"]
        for s in manifest["index"]["shards"]:
            index = read_index(store.local_path(vid, s["index"]))
            set_search_params(index, nprobe=nprobe, ef_search=ef)
            ids = pq.read_table(store.local_path(vid, s["ids"]), columns=["item_id", "text"])
            if index.ntotal != ids.num_rows or ids.num_rows != s["n_items"]:
                raise StoreError(
                    f"version {vid}: shard {s['index']} holds {index.ntotal} vectors and "
                    f"{ids.num_rows} ids, the manifest says {s['n_items']}"
                )
            shards.append((s["shard"], index, ids.column("item_id").to_pylist(),
                           ids.column("text").to_pylist()))
            if "h_index" in s:
                h_shards.append(read_index(store.local_path(vid, s["h_index"])))
        anchor_columns = None
        if h_shards:
            rows = np.load(store.local_path(vid, manifest["anchors"]["scores_file"]),
                           allow_pickle=False)  # [k_i, k_q + n_test]
            anchor_columns = rows[:, : manifest["anchors"]["n_queries"]].T.astype(np.float64)
        return cls(store=store, version=vid, manifest=manifest,
                   scorer=build_scorer(scfg, fp),
                   anchor_ids=anchors.column("id").to_pylist(),
                   anchor_texts=anchors.column("text").to_pylist(), shards=shards,
                   h_shards=h_shards, anchor_columns=anchor_columns)

    @property
    def adaptive(self) -> bool:
        """Whether this version supports adaptive search (rounds > 1)."""
        return self._h_index is not None

    def search(self, queries: Sequence[str], *, k: int = 10, budget: int = 200,
               rounds: int = 1, rcond: float | None = None) -> list[SearchResult]:
        """Top-k items per query by exact score, spending at most `budget` model calls each.

        `rounds` > 1: adaptive search (needs a version built with `[index] adaptive = true`);
        `rcond` is its least-squares cutoff (default: the build's `[factorize] rcond`).
        """
        k_i = len(self.anchor_ids)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if budget <= k_i:
            raise ValueError(f"budget {budget} must exceed the {k_i} anchor items of this index")
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if rounds > 1 and not self.adaptive:
            raise ValueError(f"version {self.version} was built without [index] adaptive = "
                             "true: it has no H shards, so only rounds = 1 is possible")
        queries = list(queries)
        if not queries:
            return []
        c = checked_scores(self.scorer.score_block(queries, self.anchor_texts), len(queries),
                           k_i, where="the anchor items")  # [n_q, k_i]
        n_cand = min(budget - k_i, self.n_items - k_i)
        first = round_sizes(n_cand, rounds)[0]
        labels = self._retrieve(self._index, c, first, [set() for _ in queries])
        found = [(lab, self._exact(q, lab)) for q, lab in zip(queries, labels, strict=True)]
        if rounds > 1:
            found = adaptive_rounds(
                first=found, anchor_columns=self._anchor_columns, anchor_exact=c,
                n_retrieve=n_cand, rounds=rounds,
                rcond=self.manifest["config"]["factorize"]["rcond"] if rcond is None else rcond,
                retrieve=lambda w, n, seen: self._retrieve(self._h_index, w, n, seen),
                exact=lambda qi, lab: self._exact(queries[qi], lab),
                columns=self._h_columns)
        out = []
        for qi, (q, (lab, exact)) in enumerate(zip(queries, found, strict=True)):
            ids = list(self.anchor_ids) + [self._item(x)[0] for x in lab]
            texts = list(self.anchor_texts) + [self._item(x)[1] for x in lab]
            s = np.concatenate([c[qi], exact]).astype(np.float32)
            top = np.argsort(-s, kind="stable")[:k]
            out.append(SearchResult(query=q, ids=[ids[i] for i in top], scores=s[top],
                                    texts=[texts[i] for i in top], model_calls=len(ids)))
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

    def _h_columns(self, labels: list[int]) -> np.ndarray:
        """Anchor-query scores of the items of `labels`: [k_q, len(labels)]."""
        shard, row = split_labels(np.asarray(labels, dtype=np.int64))
        out = np.empty((len(labels), self._h_index.d), dtype=np.float32)
        for j, (s, r) in enumerate(zip(shard, row, strict=True)):
            out[j] = faiss.downcast_index(self._h_shards[int(s)].index).reconstruct(int(r))
        return out.T.astype(np.float64)

    def _retrieve(self, index: faiss.Index, x: np.ndarray, n: int, seen: list[set[int]]
                  ) -> list[list[int]]:
        """The labels of the n best non-anchor items per query by `index`'s inner product with
        the rows of `x`, leaving out those in `seen`."""
        if n <= 0:
            return [[] for _ in range(len(x))]
        # Anchors and items already scored come back too: ask for enough to drop them.
        want = min(n + len(self.anchor_ids) + max(map(len, seen)), self.n_items)
        _, lab = index.search(np.ascontiguousarray(x, dtype=np.float32), want)
        out = []
        for qi in range(len(x)):
            got: list[int] = []
            for label in lab[qi].tolist():
                if label < 0 or label in seen[qi]:  # < 0: fewer hits (an approximate index)
                    continue
                if self._item(label)[0] in self._anchor_set:
                    continue
                got.append(label)
                if len(got) == n:
                    break
            out.append(got)
        return out

    def describe(self) -> str:
        m = self.manifest
        return json.dumps({"version": self.version, "items": m["counts"]["items"],
                           "k_i": m["anchors"]["n_items"], "k_q": m["anchors"]["n_queries"]})

