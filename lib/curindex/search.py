"""Query-time search over a published version.

For each query: score it exactly against the k_i anchor items (its vector ``c``), retrieve the
``budget - k_i`` best non-anchor items by ``c . e`` from the shards, score those exactly, and
return the top k of candidates and anchor items by exact score. Exact-model calls per query:
exactly ``budget`` (or fewer when the corpus is smaller).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow.parquet as pq

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
                 anchor_ids: list[str], anchor_texts: list[str], shards: list[tuple]) -> None:
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
        shards = []
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
        return cls(store=store, version=vid, manifest=manifest,
                   scorer=build_scorer(scfg, fp),
                   anchor_ids=anchors.column("id").to_pylist(),
                   anchor_texts=anchors.column("text").to_pylist(), shards=shards)

    def search(self, queries: Sequence[str], *, k: int = 10, budget: int = 200
               ) -> list[SearchResult]:
        """Top-k items per query by exact score, spending at most `budget` model calls each."""
        k_i = len(self.anchor_ids)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if budget <= k_i:
            raise ValueError(f"budget {budget} must exceed the {k_i} anchor items of this index")
        queries = list(queries)
        if not queries:
            return []
        c = checked_scores(self.scorer.score_block(queries, self.anchor_texts), len(queries),
                           k_i, where="the anchor items")  # [n_q, k_i]
        n_cand = min(budget - k_i, self.n_items - k_i)
        cand = self._retrieve(c, n_cand)
        out = []
        for qi, q in enumerate(queries):
            ids = list(self.anchor_ids)
            texts = list(self.anchor_texts)
            scores = [c[qi]]
            cid, ctext = cand[qi]
            if cid:
                scores.append(checked_scores(self.scorer.score_block([q], ctext), 1, len(ctext),
                                             where="the candidates")[0])
                ids += cid
                texts += ctext
            s = np.concatenate(scores)
            top = np.argsort(-s, kind="stable")[:k]
            out.append(SearchResult(query=q, ids=[ids[i] for i in top], scores=s[top],
                                    texts=[texts[i] for i in top], model_calls=len(ids)))
        return out

    def _retrieve(self, c: np.ndarray, n: int) -> list[tuple[list[str], list[str]]]:
        """The n best non-anchor items per query by approximate score: (ids, texts)."""
        if n <= 0:
            return [([], []) for _ in range(len(c))]
        want = min(n + len(self.anchor_ids), self.n_items)  # anchors come back too: dropped
        _, lab = self._index.search(np.ascontiguousarray(c, dtype=np.float32), want)
        out = []
        for qi in range(len(c)):
            ids, texts = [], []
            for j in range(lab.shape[1]):
                if lab[qi, j] < 0:  # fewer hits than asked (an approximate index)
                    continue
                shard, row = split_labels(lab[qi, j])
                _, _, sids, stexts = self._by_shard[int(shard)]
                iid = sids[int(row)]
                if iid in self._anchor_set:
                    continue
                ids.append(iid)
                texts.append(stexts[int(row)])
                if len(ids) == n:
                    break
            out.append((ids, texts))
        return out

    def describe(self) -> str:
        m = self.manifest
        return json.dumps({"version": self.version, "items": m["counts"]["items"],
                           "k_i": m["anchors"]["n_items"], "k_q": m["anchors"]["n_queries"]})

