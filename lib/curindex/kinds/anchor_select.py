"""Anchor item selection beyond random, pure numpy (Spark feeds it; ``build/select.py``).

- ``kmeans``: items nearest to the k-means centroids of cheap item embeddings (the mean-pooled
  all-MiniLM-L6-v2 vectors of a seeded sample of items): anchors spread over the corpus.
- ``leverage``: anchors chosen from the anchor-query scores themselves. The rank-r leverage
  score of item j, ``|| S_r^-1 V_r^T h_j ||^2`` with ``H H^T = V S^2 V^T``, measures how much
  of the row space of H the item's column carries; the ``pool`` items of highest leverage are
  gathered and column-pivoted QR picks ``k_i`` of them that are far from each other's span, so
  ``U = H[:, anchors]`` is well conditioned. ``H H^T`` is ``k_q x k_q``: Spark sums it over
  partitions, and only the pool's columns reach the driver, never H.

Every function is deterministic for its inputs (and seed); ties are broken by position, which
callers make stable by sorting items by id.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def kmeans_rows(emb: np.ndarray, k: int, *, seed: int, niter: int = 20) -> np.ndarray:
    """Indices of `k` distinct rows of `emb` [n, d], each nearest to one k-means centroid
    (spherical k-means, inner product), in centroid order."""
    import faiss

    n, d = emb.shape
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} anchors from {n} embedded items")
    x = np.ascontiguousarray(emb, dtype=np.float32)
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1)
    km.train(x)
    sims = km.centroids @ x.T  # [k, n]
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for c in range(k):  # nearest item not already an anchor
        order = np.argsort(-sims[c], kind="stable")
        j = int(next(j for j in order if not taken[j]))
        taken[j] = True
        chosen.append(j)
    return np.array(chosen, dtype=np.int64)


def leverage_projector(gram: np.ndarray, *, rank: int, rcond: float = 1e-6) -> np.ndarray:
    """P [r, k_q] with ``||P h||^2`` the rank-r leverage score of a column h of H, from
    ``gram = H H^T`` [k_q, k_q]; r = min(rank, directions above rcond * largest)."""
    evals, evecs = np.linalg.eigh(np.asarray(gram, dtype=np.float64))
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    keep = int(np.count_nonzero(evals > max(evals[0], 0.0) * rcond)) if evals.size else 0
    r = max(1, min(rank, keep))
    return (evecs[:, :r] / np.sqrt(np.maximum(evals[:r], 1e-300))).T


def leverage_scores(projector: np.ndarray, h_rows: np.ndarray) -> np.ndarray:
    """Leverage score of each item: h_rows [n, k_q] (columns of H as rows) -> [n]."""
    z = np.asarray(h_rows, dtype=np.float64) @ projector.T  # [n, r]
    return np.einsum("ij,ij->i", z, z)


def pivoted_qr_columns(h_pool: np.ndarray, k: int) -> np.ndarray:
    """Indices of `k` columns of h_pool [k_q, m] chosen by column-pivoted QR, in pivot order:
    each next column is the one with the most norm outside the span of those before it."""
    m = h_pool.shape[1]
    if not 1 <= k <= m:
        raise ValueError(f"k = {k} anchors from a pool of {m} items")
    _, _, piv = scipy.linalg.qr(np.asarray(h_pool, dtype=np.float64), mode="economic",
                                pivoting=True)
    return np.asarray(piv[:k], dtype=np.int64)
