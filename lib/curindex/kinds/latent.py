"""Latent maps of the sparse build: item and query vectors as functions of their bi-encoder
embeddings, fitted to a sparse set of exact scores (AXN's inductive matrix factorization).

Each map is ``x -> x + sigmoid(gate) * (W2 gelu(W1 x + b1) + b2)``: a two-layer MLP behind a
gated skip connection whose gate starts almost closed (-5), so that before any fitting the
maps are the identity and the latent score of a query and an item is their bi-encoder
cosine. Every item, scored or not, gets a latent vector from its embedding alone; a new item
costs no exact-model call.

The entries are the exact scores ``s`` of (training query, item) pairs, rescaled
``t = beta (s - alpha)`` with ``alpha, beta`` the least-squares fit of the bi-encoder cosine
on ``s`` (so the identity maps start at the best linear reading of the scores). The maps are
fitted with AdamW on the squared error of ``g(q) . f(i)`` against ``t`` over the entries, and
stop when the error on a held-out share of the entries has not improved for ``patience``
epochs (the best epoch's maps are kept).

``fit_maps`` runs in torch on one process (the driver: the entries are small, |Q| x (k_d + r));
``LatentMaps`` applies the fitted maps in numpy (executors, the Searcher), float32.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np

from curindex.errors import IntegrityError

MAP_NAMES = ("query", "item")
_PARAMS = ("w1", "b1", "w2", "b2", "gate")


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


@dataclass(frozen=True)
class GatedMap:
    """One map's parameters: w1 [hidden, d], b1 [hidden], w2 [d, hidden], b2 [d], gate [d]."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    gate: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """[n, d] embeddings -> [n, d] latent vectors, float32."""
        x = np.asarray(x, dtype=np.float32)
        hidden = _gelu(x @ self.w1.T + self.b1)
        return (x + (1.0 / (1.0 + np.exp(-self.gate))) * (hidden @ self.w2.T + self.b2)
                ).astype(np.float32)


@dataclass(frozen=True)
class LatentMaps:
    """The fitted query and item maps, and the score rescaling ``t = beta (s - alpha)``."""

    query: GatedMap
    item: GatedMap
    alpha: float
    beta: float

    @property
    def dim(self) -> int:
        return int(self.item.b2.shape[0])

    def rescale(self, s: np.ndarray) -> np.ndarray:
        """Exact scores on the latent scale."""
        return self.beta * (np.asarray(s, dtype=np.float64) - self.alpha)

    def to_bytes(self) -> bytes:
        """An .npz (no pickle) of every parameter."""
        arrays = {f"{m}.{p}": getattr(getattr(self, m), p) for m in MAP_NAMES for p in _PARAMS}
        buf = io.BytesIO()
        np.savez(buf, alpha=np.float64(self.alpha), beta=np.float64(self.beta), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "latent maps") -> LatentMaps:
        """Read `to_bytes`'s output; IntegrityError naming `where` when it is not such a
        file (a damaged or edited version)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                maps = {m: GatedMap(**{p: np.asarray(z[f"{m}.{p}"], dtype=np.float32)
                                       for p in _PARAMS}) for m in MAP_NAMES}
                alpha, beta = float(z["alpha"]), float(z["beta"])
        except (OSError, EOFError, KeyError, ValueError) as e:
            raise IntegrityError(f"{where}: not a latent maps file ({e})") from e
        d = maps["item"].b2.shape[0]
        for m in maps.values():
            h = m.b1.shape[0]
            if (m.w1.shape != (h, d) or m.w2.shape != (d, h) or m.b2.shape != (d,)
                    or m.gate.shape != (d,)):
                raise IntegrityError(f"{where}: parameter shapes do not fit together")
        if not (np.isfinite(alpha) and np.isfinite(beta)):
            raise IntegrityError(f"{where}: alpha and beta must be finite")
        return cls(maps["query"], maps["item"], alpha, beta)


@dataclass(frozen=True)
class FitStats:
    entries: int
    holdout_entries: int
    holdout_mse_start: float  # the identity maps' error on the held-out entries
    holdout_mse: float  # the kept maps' error on them
    train_mse: float
    epochs: int  # run (the kept maps are the best epoch's)
    best_epoch: int
    seconds: float


def rescaling(cos: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(alpha, beta) with ``cos ~ beta (s - alpha)`` in least squares; beta 1, alpha the mean
    offset when the scores do not vary."""
    s = np.asarray(s, dtype=np.float64)
    cos = np.asarray(cos, dtype=np.float64)
    if len(s) < 2 or float(s.std()) == 0.0:
        return float(s.mean() - cos.mean()) if len(s) else 0.0, 1.0
    beta, c0 = np.polyfit(s, cos, 1)
    if beta == 0.0:
        return float(s.mean() - cos.mean()), 1.0
    return float(-c0 / beta), float(beta)


def fit_maps(q_emb: np.ndarray, i_emb: np.ndarray, qi: np.ndarray, ii: np.ndarray,
             s: np.ndarray, *, hidden: int, epochs: int, patience: int, learning_rate: float,
             weight_decay: float, holdout: float, batch_size: int, seed: int,
             threads: int = 0) -> tuple[LatentMaps, FitStats]:
    """Fit the maps to entries ``s[j] = score(query qi[j], item ii[j])``.

    q_emb: [n_q, d] query embeddings; i_emb: [n_i, d] item embeddings (of the items that have
    entries); qi, ii: [m] row numbers into them; s: [m] exact scores. The same entries (in the
    same order), seed and `threads` give the same maps. Raises ValueError on empty or
    mismatched entries."""
    import torch

    m = len(s)
    if m < 2 or len(qi) != m or len(ii) != m:
        raise ValueError(f"need at least 2 aligned entries, got {len(qi)}, {len(ii)}, {m}")
    t0 = time.perf_counter()
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        q_emb = np.array(q_emb, dtype=np.float32, order="C")  # copies: torch writes into them
        i_emb = np.array(i_emb, dtype=np.float32, order="C")
        cos = np.einsum("ij,ij->i", q_emb[qi], i_emb[ii])
        alpha, beta = rescaling(cos, s)
        target = (beta * (np.asarray(s, np.float64) - alpha)).astype(np.float32)
        order = rng.permutation(m)
        n_hold = max(1, round(m * holdout))
        hold, train = order[:n_hold], order[n_hold:]
        d = q_emb.shape[1]
        nets = {name: _torch_map(torch, d, hidden) for name in MAP_NAMES}
        params = [p for net in nets.values() for p in net.parameters()]
        opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        q_t, i_t = torch.from_numpy(q_emb), torch.from_numpy(i_emb)
        QI = torch.from_numpy(np.asarray(qi, np.int64))
        II = torch.from_numpy(np.asarray(ii, np.int64))
        T = torch.from_numpy(target)

        def predict(idx):
            return (nets["query"](q_t[QI[idx]]) * nets["item"](i_t[II[idx]])).sum(1)

        def mse(idx) -> float:
            with torch.no_grad():
                return float(((predict(idx) - T[idx]) ** 2).mean())

        hold_t = torch.from_numpy(hold)
        best, best_epoch, start = mse(hold_t), 0, mse(hold_t)
        best_state = _state(nets)
        epoch = 0
        for epoch in range(1, epochs + 1):
            shuffled = torch.from_numpy(train[rng.permutation(len(train))])
            for b in range(0, len(train), batch_size):
                idx = shuffled[b:b + batch_size]
                loss = ((predict(idx) - T[idx]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            h = mse(hold_t)
            if h < best:
                best, best_epoch, best_state = h, epoch, _state(nets)
            elif epoch - best_epoch >= patience:
                break
        for name, net in nets.items():
            net.load_state_dict(best_state[name])
        maps = LatentMaps(**{name: _numpy_map(nets[name]) for name in MAP_NAMES},
                          alpha=alpha, beta=beta)
        stats = FitStats(entries=m, holdout_entries=len(hold), holdout_mse_start=start,
                         holdout_mse=best, train_mse=mse(torch.from_numpy(train)) if len(train)
                         else float("nan"), epochs=epoch, best_epoch=best_epoch,
                         seconds=round(time.perf_counter() - t0, 3))
        return maps, stats
    finally:
        torch.set_num_threads(previous)


def _torch_map(torch, d: int, hidden: int):
    class Gated(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = torch.nn.Linear(d, hidden)
            self.w2 = torch.nn.Linear(hidden, d)
            self.gate = torch.nn.Parameter(torch.full((d,), -5.0))

        def forward(self, x):
            return x + torch.sigmoid(self.gate) * self.w2(torch.nn.functional.gelu(self.w1(x)))

    return Gated()


def _state(nets: dict) -> dict:
    return {name: {k: v.detach().clone() for k, v in net.state_dict().items()}
            for name, net in nets.items()}


def _numpy_map(net) -> GatedMap:
    def arr(t):
        return t.detach().numpy().astype(np.float32).copy()

    return GatedMap(w1=arr(net.w1.weight), b1=arr(net.w1.bias), w2=arr(net.w2.weight),
                    b2=arr(net.w2.bias), gate=arr(net.gate))
