"""Adaptive multi-round search (ADACUR), pure numpy.

Plain CUR search spends the budget in one round: the query's exact scores on the k_i anchor
items give its vector, and the best ``budget - k_i`` items by ``c . e`` are scored exactly.
Adaptive search spends the same budget in ``rounds``: after each round the items just scored
exactly join the query's own anchor set, and the query is re-solved in anchor-query space
before the next retrieval:

    w = argmin_w || H_A^T w - s_A ||   (least squares, singular values <= rcond * max dropped)

where ``H_A`` [k_q, |A|] holds the anchor-query scores of the exactly scored items ``A`` and
``s_A`` [|A|] the query's exact scores on them; item j's estimate is ``w . h_j``. With ``A`` the
anchor items this is plain CUR (``w = G^T c``), so round 1 is plain search; later rounds fit the
query on items near its own top, where plain CUR is least accurate.

Items are integer keys (``search.py`` uses faiss labels); the callables hide the index and the
model, so this module runs the same on a generated matrix and on a published version.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# (w [n_q, k_q], n per query, keys already scored per query) -> new keys per query, best first
RetrieveFn = Callable[[np.ndarray, int, list[set[int]]], list[list[int]]]
# (query index, keys) -> exact scores [len(keys)]
ExactFn = Callable[[int, list[int]], np.ndarray]
# keys -> anchor-query scores [k_q, len(keys)]
ColumnsFn = Callable[[list[int]], np.ndarray]


def round_sizes(n: int, rounds: int) -> list[int]:
    """`n` retrievals split over `rounds` rounds, as evenly as possible, larger rounds first."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    base, extra = divmod(max(n, 0), rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def query_weights(h_a: np.ndarray, s_a: np.ndarray, *, rcond: float) -> np.ndarray:
    """The query's vector in anchor-query space.

    h_a: [k_q, m] anchor-query scores of the m exactly scored items; s_a: [m] or [m, n_q] the
    query's exact scores on them. Returns w [k_q] (or [k_q, n_q]) minimising
    ``||h_a^T w - s_a||`` with singular values of ``h_a`` <= rcond * max dropped.
    """
    return np.linalg.lstsq(np.asarray(h_a, np.float64).T, np.asarray(s_a, np.float64),
                           rcond=rcond)[0]


def adaptive_rounds(
    *,
    first: list[tuple[list[int], np.ndarray]],
    later: list[int],
    anchor_columns: np.ndarray,
    anchor_exact: np.ndarray,
    rcond: float,
    retrieve: RetrieveFn,
    exact: ExactFn,
    columns: ColumnsFn,
) -> list[tuple[list[int], np.ndarray]]:
    """Rounds 2..R of adaptive search for a batch of queries.

    first: per query, round 1's retrieved keys and their exact scores (plain CUR search, or
    another source's candidates); later: the retrievals per query of each later round;
    anchor_columns: [k_q, k_i] anchor-query scores of the anchor items (k_i may be 0);
    anchor_exact: [n_q, k_i] the queries' exact scores on them. Returns per query every
    retrieved key (all rounds, in retrieval order) with its exact score. Exact-model calls per
    query: the anchors, round 1, and at most sum(later).
    """
    keys = [list(k) for k, _ in first]
    scores = [list(np.asarray(s, np.float64)) for _, s in first]
    h_cols = [columns(k) if k else np.zeros((anchor_columns.shape[0], 0)) for k in keys]
    for size in later:
        if size == 0:
            continue
        w = np.stack([
            query_weights(np.hstack([anchor_columns, h_cols[q]]),
                          np.concatenate([anchor_exact[q], scores[q]]), rcond=rcond)
            for q in range(len(keys))
        ])  # [n_q, k_q]
        new = retrieve(w, size, [set(k) for k in keys])
        for q, got in enumerate(new):
            if not got:
                continue
            keys[q] += got
            scores[q] += list(np.asarray(exact(q, got), np.float64))
            h_cols[q] = np.hstack([h_cols[q], columns(got)])
    return [(k, np.array(s, dtype=np.float64)) for k, s in zip(keys, scores, strict=True)]
