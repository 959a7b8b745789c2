"""Anchor selection: which queries are scored against every item, which are held out for
validation, and which items span the item space.

``random`` (the reference method) is a seeded pseudo-random choice made by ranking ids on a
seeded 64-bit hash: the same seed picks the same anchors however the data is partitioned, on
one machine or a cluster, and nothing but the chosen rows reaches the driver.

Anchor items by ``[anchors] items``: ``random``; ``kmeans`` (a seeded sample of at most
``KMEANS_SAMPLE`` items is embedded with the bi-encoder on the driver, and the items nearest
to k_i k-means centroids are the anchors); ``leverage`` (chosen from the anchor-query scores
after the score pass, ``curindex.pipeline.leverage``: here no item is chosen yet).

Synthetic anchor queries (``[anchors] synthetic_queries = S``, for small query logs): S of the
k_q anchor queries are the first sentences of a seeded sample of items (ids
``synthetic:<item id>``). Test queries come from the query source, except synthetic tuning
queries (``[validate] synthetic_tuning``, where the log leaves too few to tune on): made the
same way from the next items of the same seeded order, they come first among the test
queries and tune, and the log's test queries report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curindex.config import AnchorsConfig
from curindex.errors import InputError
from curindex.inputs.sources import anchor_count_problems
from curindex.pipeline.files import parquet_bytes
from curindex.store import FileEntry, Store

KMEANS_SAMPLE = 10_000  # items embedded on the driver for k-means anchors (at most)
SYNTHETIC_PREFIX = "synthetic:"  # id of a synthetic anchor query: this + the item's id
SYNTHETIC_WORDS = 16  # a synthetic query is at most this many words of an item's text
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def synthetic_query(text: str, max_words: int = SYNTHETIC_WORDS) -> str:
    """A query made from an item: its first sentence, at most `max_words` words."""
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return " ".join(first.split()[:max_words])


@dataclass(frozen=True)
class Anchors:
    query_ids: list[str]  # k_q anchor queries
    query_texts: list[str]
    test_ids: list[str]  # n_test held-out queries, scored in the same pass
    test_texts: list[str]
    item_ids: list[str]  # k_i anchor items
    item_texts: list[str]

    @property
    def made_tests(self) -> int:
        """Test queries made from items (synthetic tuning queries: the first ones)."""
        return sum(i.startswith(SYNTHETIC_PREFIX) for i in self.test_ids)

    @property
    def scored_query_texts(self) -> list[str]:
        """Every query scored against the corpus: anchors first, then test queries."""
        return self.query_texts + self.test_texts


def seeded_sample(df: DataFrame, n: int, *, seed: int, salt: str) -> list[tuple[str, str]]:
    """n (id, text) rows of df chosen pseudo-randomly by seed, in a stable order."""
    key = F.xxhash64(F.lit(f"curindex:{salt}:{seed}"), F.col("id"))
    rows = df.select("id", "text", key.alias("_k")).orderBy("_k", "id").limit(n).collect()
    return [(r["id"], r["text"]) for r in rows]


def made_queries(items: DataFrame, used: int, tuning: int, *, seed: int, n_items: int
                 ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Queries made from items, (id, text): the first `used` (synthetic anchor or training
    queries) and the next `tuning` (synthetic tuning queries, none empty) of one seeded order
    of the items, so the two never share an item (at most one query per item)."""
    n = min(used + tuning, n_items)
    if n <= 0:
        return [], []
    made = [(f"{SYNTHETIC_PREFIX}{i}", synthetic_query(t))
            for i, t in seeded_sample(items, n, seed=seed, salt="synthetic")]
    return made[:used], [m for m in made[used:] if m[1].strip()]


def choose_anchors(
    items: DataFrame, queries: DataFrame, cfg: AnchorsConfig, *, n_items: int, n_queries: int,
    synthetic_tests: int = 0,
) -> Anchors:
    """Pick k_q anchor queries, n_test test queries (disjoint) and k_i anchor items; with
    `synthetic_tests`, that many more test queries made from items come first (they tune).

    Raises InputError when the sources hold fewer rows than asked for.
    """
    n_real = cfg.n_queries - cfg.synthetic_queries  # anchor queries from the query source
    need_q = n_real + cfg.n_test
    problems = anchor_count_problems(cfg, n_items=n_items, n_queries=n_queries)
    if problems:
        raise InputError(problems[0][1])
    q = seeded_sample(queries, need_q, seed=cfg.seed, salt="queries")
    if cfg.items == "kmeans":
        it = kmeans_items(items, cfg.n_items, seed=cfg.seed, n_items=n_items)
    elif cfg.items == "leverage":
        it = []  # chosen from the scores, after the score pass
    else:
        it = seeded_sample(items, cfg.n_items, seed=cfg.seed, salt="items")
    anchor_q, test_q = q[:n_real], q[n_real:]
    made, tuning = made_queries(items, cfg.synthetic_queries, synthetic_tests, seed=cfg.seed,
                                n_items=n_items)
    anchor_q += made
    test_q = tuning + test_q
    return Anchors(
        query_ids=[i for i, _ in anchor_q],
        query_texts=[t for _, t in anchor_q],
        test_ids=[i for i, _ in test_q],
        test_texts=[t for _, t in test_q],
        item_ids=[i for i, _ in it],
        item_texts=[t for _, t in it],
    )


def kmeans_items(items: DataFrame, k: int, *, seed: int, n_items: int) -> list[tuple[str, str]]:
    """k (id, text) items nearest to the k-means centroids of the bi-encoder embeddings of a
    seeded sample of items (sorted by id, so the choice depends only on the data and seed)."""
    from curindex.kinds.anchor_select import kmeans_rows
    from curindex.scoring.biencoder import get_biencoder

    sample = sorted(seeded_sample(items, min(n_items, KMEANS_SAMPLE), seed=seed,
                                  salt="items-kmeans"))
    emb = get_biencoder().encode([t for _, t in sample])  # [n, dim]
    return [sample[j] for j in kmeans_rows(emb, k, seed=seed)]


def write_anchor_tables(store: Store, version: str, anchors: Anchors) -> list[FileEntry]:
    n_q, n_t = len(anchors.query_ids), len(anchors.test_ids)
    def strings(values: list[str]) -> pa.Array:
        return pa.array(values, pa.string())  # typed when empty (a sparse build's items)

    items = pa.table({"id": strings(anchors.item_ids), "text": strings(anchors.item_texts)})
    queries = pa.table({  # "anchor": a dense build's anchor queries, a sparse one's training
        "id": strings(anchors.query_ids + anchors.test_ids),
        "text": strings(anchors.query_texts + anchors.test_texts),
        "role": strings(["anchor"] * n_q + ["test"] * n_t),
    })
    return [store.write_bytes(version, "anchors/items.parquet", parquet_bytes(items)),
            store.write_bytes(version, "anchors/queries.parquet", parquet_bytes(queries))]
