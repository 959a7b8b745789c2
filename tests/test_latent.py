"""The sparse build's pure maths: the latent maps (fit, numpy forward, file round trip), the
score rescaling, and the rounds' re-solve toward a prior, against independent answers."""

from __future__ import annotations

import numpy as np
import pytest

from curindex.errors import IntegrityError
from curindex.kinds.latent import GatedMap, LatentMaps, fit_maps, rescaling
from curindex.search.methods import prior_weights


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _problem(seed: int = 0, n_q: int = 120, n_i: int = 300, d: int = 16):
    """Embeddings and a teacher that is a fixed linear map of them plus a shift: s = q A i^T."""
    rng = np.random.default_rng(seed)
    q, i = _unit(rng.normal(size=(n_q, d))), _unit(rng.normal(size=(n_i, d)))
    a = np.eye(d) + 0.8 * rng.normal(size=(d, d)) / np.sqrt(d)
    return q, i, (q @ a @ i.T) * 3.0 + 1.0


def _entries(n_q: int, n_i: int, per_query: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    qi = np.repeat(np.arange(n_q), per_query)
    ii = np.concatenate([rng.choice(n_i, per_query, replace=False) for _ in range(n_q)])
    return qi, ii


FIT = dict(hidden=32, epochs=60, patience=10, learning_rate=3e-3, weight_decay=0.0,
           holdout=0.1, batch_size=256, seed=0)


def test_the_maps_start_as_the_identity_and_the_rescaling_reads_cosine():
    q, i, s = _problem()
    qi, ii = _entries(len(q), len(i), 20)
    maps, stats = fit_maps(q, i, qi, ii, s[qi, ii], **{**FIT, "epochs": 0})
    np.testing.assert_allclose(maps.item(i), i, atol=0.02)  # gate sigmoid(-5) ~ 0.0067
    cos = np.einsum("ij,ij->i", q[qi], i[ii])
    alpha, beta = rescaling(cos, s[qi, ii])
    ref = np.linalg.lstsq(np.stack([s[qi, ii], np.ones(len(qi))], 1), cos, rcond=None)[0]
    assert beta == pytest.approx(ref[0]) and -alpha * beta == pytest.approx(ref[1])
    assert (maps.alpha, maps.beta) == (alpha, beta)
    assert stats.epochs == 0 and stats.holdout_mse == stats.holdout_mse_start


def test_fitting_learns_what_the_bi_encoder_misses_on_held_out_entries():
    q, i, s = _problem()
    qi, ii = _entries(len(q), len(i), 20)
    maps, stats = fit_maps(q, i, qi, ii, s[qi, ii], **FIT)
    assert stats.holdout_mse < 0.5 * stats.holdout_mse_start
    assert 1 <= stats.best_epoch <= stats.epochs <= FIT["epochs"]
    # entries never seen: the latent scores track the teacher better than the bi-encoder does
    unseen = np.ones_like(s, dtype=bool)
    unseen[qi, ii] = False
    latent = maps.query(q) @ maps.item(i).T
    t = maps.rescale(s)
    bi = q @ i.T
    assert np.mean((latent - t)[unseen] ** 2) < 0.6 * np.mean((bi - t)[unseen] ** 2)


def test_a_fit_is_reproducible_and_its_file_round_trips(tmp_path):
    q, i, s = _problem(seed=3)
    qi, ii = _entries(len(q), len(i), 10)
    a, _ = fit_maps(q, i, qi, ii, s[qi, ii], **{**FIT, "epochs": 5}, threads=1)
    b, _ = fit_maps(q, i, qi, ii, s[qi, ii], **{**FIT, "epochs": 5}, threads=1)
    np.testing.assert_array_equal(a.item(i), b.item(i))
    back = LatentMaps.from_bytes(a.to_bytes())
    np.testing.assert_array_equal(back.query(q), a.query(q))
    assert (back.alpha, back.beta, back.dim) == (a.alpha, a.beta, 16)


def test_the_numpy_forward_equals_torch():
    import torch

    rng = np.random.default_rng(0)
    d, h = 8, 5
    m = GatedMap(*(rng.normal(size=s).astype(np.float32) for s in ((h, d), (h,), (d, h), (d,),
                                                                     (d,))))
    x = rng.normal(size=(7, d)).astype(np.float32)
    t = {k: torch.from_numpy(getattr(m, k)) for k in ("w1", "b1", "w2", "b2", "gate")}
    xt = torch.from_numpy(x)
    ref = xt + torch.sigmoid(t["gate"]) * (torch.nn.functional.gelu(xt @ t["w1"].T + t["b1"])
                                           @ t["w2"].T + t["b2"])
    np.testing.assert_allclose(m(x), ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [b"not an npz", b""])
def test_a_corrupt_maps_file_is_a_named_error(bad):
    with pytest.raises(IntegrityError, match=r"version v: sparse/maps\.npz: not a latent maps"):
        LatentMaps.from_bytes(bad, where="version v: sparse/maps.npz")


@pytest.mark.parametrize(("m", "d"), [(5, 12), (30, 12)])  # fewer and more items than dims
def test_the_prior_re_solve_is_the_regularised_least_squares(m, d):
    rng = np.random.default_rng(m)
    h_a, s_a, prior = rng.normal(size=(d, m)), rng.normal(size=m), rng.normal(size=d)
    w = prior_weights(h_a, s_a, prior=prior, weight=0.7)
    # independently: least squares on the augmented system [h_a^T; sqrt(l) I] w = [s; sqrt(l) p]
    a = np.vstack([h_a.T, np.sqrt(0.7) * np.eye(d)])
    ref = np.linalg.lstsq(a, np.concatenate([s_a, np.sqrt(0.7) * prior]), rcond=None)[0]
    np.testing.assert_allclose(w, ref, rtol=1e-8, atol=1e-10)
    # with nothing scored yet the answer is the prior itself
    np.testing.assert_allclose(prior_weights(np.zeros((d, 0)), np.zeros(0), prior=prior,
                                             weight=0.7), prior)
