"""The CUR algebra, pure numpy: intersection matrix -> G, item vectors, diagnostics.

Notation (shapes in brackets):
- ``U`` [k_q, k_i]: scores of the anchor queries against the anchor items;
- ``H`` [k_q, n]: scores of the anchor queries against every item (held by Spark, never here);
- ``G = pinv(U)`` [k_i, k_q], computed with small singular values dropped;
- item vectors ``E = (G H)^T`` [n, k_i]: one row ``G h_k`` per item;
- a query's vector is its exact scores against the anchor items ``c`` [k_i], and
  ``c . e_k`` approximates its score for item k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curindex.errors import FactorizeError


@dataclass(frozen=True)
class Factorization:
    g: np.ndarray  # [k_i, k_q] float64
    singular_values: np.ndarray  # of U, descending, [min(k_q, k_i)]
    rank: int  # singular values kept
    rcond: float  # relative cutoff used: kept iff sigma > rcond * sigma_max

    def diagnostics(self) -> dict:
        s = self.singular_values
        kept = s[: self.rank]
        return {
            "rcond": self.rcond,
            "effective_rank": self.rank,
            "singular_values": [float(x) for x in s],
            "condition_number_kept": float(kept[0] / kept[-1]) if self.rank else None,
        }


def solve_g(u: np.ndarray, *, rcond: float, min_rank: int = 1) -> Factorization:
    """Pseudo-invert the intersection matrix with singular values <= rcond * max dropped.

    Raises FactorizeError when `u` holds non-finite values, or when fewer than `min_rank`
    singular values survive the cutoff (a singular or nearly constant intersection matrix,
    whose index could not rank items).
    """
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 2 or 0 in u.shape:
        raise FactorizeError(f"intersection matrix U has shape {u.shape}; expected [k_q, k_i]")
    if not np.isfinite(u).all():
        raise FactorizeError(f"intersection matrix U {u.shape} holds NaN or inf scores")
    w, s, vt = np.linalg.svd(u, full_matrices=False)  # u = w @ diag(s) @ vt
    cutoff = rcond * s[0] if s.size else 0.0
    rank = int(np.count_nonzero(s > cutoff)) if s.size and s[0] > 0 else 0
    if rank < min_rank:
        top = ", ".join(f"{x:.3g}" for x in s[:5])
        raise FactorizeError(
            f"intersection matrix U {u.shape} is singular: effective rank {rank} < min_rank "
            f"{min_rank} at rcond {rcond:g} (largest singular values: {top}). The anchor "
            "scores carry too little signal: check the scorer, or use more or other anchors"
        )
    g = (vt[:rank].T / s[:rank]) @ w[:, :rank].T  # [k_i, k_q]
    return Factorization(g=g, singular_values=s, rank=rank, rcond=rcond)


def item_vectors(h_rows: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Item vectors for a block of items.

    h_rows: [n, k_q] anchor-query scores per item (rows of H^T); g: [k_i, k_q].
    Returns [n, k_i] float32: row k is G h_k.
    """
    return (np.asarray(h_rows, dtype=np.float64) @ g.T).astype(np.float32)


def approximate_scores(c: np.ndarray, e: np.ndarray) -> np.ndarray:
    """CUR estimate of the score matrix: c [n_q, k_i] query-anchor-item scores, e [n, k_i]
    item vectors -> [n_q, n]."""
    return np.asarray(c, dtype=np.float64) @ np.asarray(e, dtype=np.float64).T
