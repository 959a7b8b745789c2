"""Top-k-Recall@budget, pure numpy.

For a test query, the search procedure spends ``budget`` exact-model calls: the ``k_i`` anchor
items (their exact scores are the query's vector) plus the ``budget - k_i`` best non-anchor
items by approximate score. The returned top k are the best of that pool by exact score.
Top-k-Recall@budget is the fraction of the exact top k (over the whole corpus) that the
returned top k holds, averaged over test queries. Ties in a score are broken by item id.

``recall_brute_force`` computes it from whole matrices (the single-machine reference);
``recall_from_tops`` from per-query shortlists that a distributed pass can produce without
collecting the matrices: the exact top ``max(ks)`` and the approximate top
``max(budgets) - k_i`` non-anchor items of each query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curindex.quality.figures import Figure


@dataclass(frozen=True)
class QueryTops:
    """One test query's shortlists; ids sorted best first."""

    exact_ids: list[str]  # exact top items over the corpus (at least max k)
    cand_ids: list[str]  # non-anchor items by approximate score (at least max budget - k_i)
    cand_exact: np.ndarray  # exact scores of cand_ids
    anchor_ids: list[str]
    anchor_exact: np.ndarray  # exact scores of the anchor items
    # Model calls spent on anchor items outside the pool (detached: deleted or changed in the
    # corpus since the anchors were chosen); they leave fewer calls for candidates.
    extra_calls: int = 0


def _top(scores: np.ndarray, ids: Sequence[str], n: int) -> list[int]:
    """Indices of the n best scores, ties broken by id."""
    order = sorted(range(len(ids)), key=lambda j: (-float(scores[j]), ids[j]))
    return order[:n]


def recall_from_tops(tops: Sequence[QueryTops], figures: Sequence[Figure]) -> dict[str, float]:
    """Mean Top-k-Recall@budget over queries for each figure."""
    out = {}
    for figure in figures:
        k, budget = figure.k, figure.budget
        total = 0.0
        for t in tops:
            n_cand = budget - len(t.anchor_ids) - t.extra_calls
            pool_ids = list(t.anchor_ids) + list(t.cand_ids[:n_cand])
            pool_exact = np.concatenate([t.anchor_exact, t.cand_exact[:n_cand]])
            got = {pool_ids[j] for j in _top(pool_exact, pool_ids, k)}
            total += len(got & set(t.exact_ids[:k])) / k
        out[str(figure)] = total / len(tops) if tops else float("nan")
    return out


def recall_brute_force(exact: np.ndarray, approx: np.ndarray, ids: Sequence[str],
                       anchor_ids: Sequence[str], figures: Sequence[Figure], *,
                       extra_calls: int = 0) -> dict[str, float]:
    """The same figures from whole matrices: exact, approx [n_test, n_items]; `anchor_ids` are
    the anchor items in the pool, `extra_calls` the detached ones."""
    ids = list(ids)
    col = {i: j for j, i in enumerate(ids)}
    anchor_cols = [col[a] for a in anchor_ids]
    non_anchor = [j for j in range(len(ids)) if ids[j] not in set(anchor_ids)]
    na_ids = [ids[j] for j in non_anchor]
    k_max = max((f.k for f in figures), default=1)
    m_max = max((f.budget for f in figures), default=0) - len(anchor_ids) - extra_calls
    tops = []
    for t in range(exact.shape[0]):
        cand = [non_anchor[j] for j in _top(approx[t, non_anchor], na_ids, max(m_max, 0))]
        tops.append(QueryTops(
            exact_ids=[ids[j] for j in _top(exact[t], ids, k_max)],
            cand_ids=[ids[j] for j in cand],
            cand_exact=exact[t, cand],
            anchor_ids=list(anchor_ids),
            anchor_exact=exact[t, anchor_cols],
            extra_calls=extra_calls,
        ))
    return recall_from_tops(tops, figures)
