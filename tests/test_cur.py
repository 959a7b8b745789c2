"""The CUR algebra against numpy's pinv and exact low-rank reconstruction."""

from __future__ import annotations

import numpy as np
import pytest

from curindex.errors import FactorizeError
from curindex.kinds.cur import approximate_scores, item_vectors, solve_g


@pytest.mark.parametrize(("k_q", "k_i"), [(1, 1), (5, 3), (40, 12), (12, 12)])
@pytest.mark.parametrize("rcond", [1e-12, 1e-3, 0.2])
def test_solve_g_equals_numpy_pinv(k_q, k_i, rcond):
    u = np.random.default_rng(k_q * 100 + k_i).normal(size=(k_q, k_i))
    fac = solve_g(u, rcond=rcond)
    np.testing.assert_allclose(fac.g, np.linalg.pinv(u, rcond=rcond), atol=1e-10)
    s = np.linalg.svd(u, compute_uv=False)
    assert fac.rank == int((s > rcond * s[0]).sum())
    np.testing.assert_allclose(fac.singular_values, s)


def test_low_rank_scores_are_reconstructed_exactly():
    rng = np.random.default_rng(0)
    rank, n, k_q = 6, 500, 30
    s = rng.normal(size=(k_q + 7, rank)) @ rng.normal(size=(rank, n))  # queries x items
    h = s[:k_q]  # anchor queries
    anchors = rng.choice(n, size=10, replace=False)
    fac = solve_g(h[:, anchors], rcond=1e-8)
    assert fac.rank == rank
    e = item_vectors(h.T, fac.g)  # [n, k_i]
    c = s[k_q:, anchors]  # unseen queries scored against the anchor items
    np.testing.assert_allclose(approximate_scores(c, e), s[k_q:], atol=1e-3, rtol=1e-4)


def test_truncation_drops_small_singular_values():
    rng = np.random.default_rng(1)
    u = rng.normal(size=(20, 2)) @ rng.normal(size=(2, 8)) + 1e-9 * rng.normal(size=(20, 8))
    assert solve_g(u, rcond=1e-4).rank == 2
    assert solve_g(u, rcond=0.0).rank == 8


@pytest.mark.parametrize(
    ("u", "fragment"),
    [
        (np.zeros((6, 3)), "singular: effective rank 0"),
        (np.ones((6, 3)), "effective rank 1 < min_rank 2"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or inf"),
        (np.zeros((0, 3)), "shape"),
    ],
)
def test_unusable_intersection_matrices_are_errors(u, fragment):
    with pytest.raises(FactorizeError, match=fragment.replace("(", r"\(")):
        solve_g(u, rcond=1e-3, min_rank=2)
