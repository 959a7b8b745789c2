"""The sparse build kind: an item's features are its latent vector ``f(bi)``, the fitted item
map of its bi-encoder embedding (``curindex.kinds.latent``), and its vector is that same
latent vector. A query's prior is ``g(bi_q)``, the query map of its embedding; search rounds
re-solve it on the items scored so far (``curindex.search.methods``, with a prior)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from curindex.kinds.latent import LatentMaps

MAPS_FILE = "sparse/maps.npz"  # in the version: the fitted maps (LatentMaps.to_bytes)


@dataclass(frozen=True)
class SparseFeatures:
    maps: LatentMaps

    @property
    def h_dim(self) -> int:
        return self.maps.dim

    def h(self, scores: np.ndarray, bi: Callable[[], np.ndarray]) -> np.ndarray:
        return self.maps.item(bi())

    def e(self, h: np.ndarray) -> np.ndarray:
        return np.asarray(h, dtype=np.float32)


@dataclass(frozen=True)
class Prior:
    """What the search rounds of a sparse version add to the re-solve: the query's latent
    prior (``weight`` * ||w - g(bi_q)||^2 joins the least squares), on the maps' scale."""

    maps: LatentMaps
    weight: float

    def vectors(self, bi_q: np.ndarray) -> np.ndarray:
        """[n_q, 384] query embeddings -> [n_q, d] prior latent vectors."""
        return self.maps.query(bi_q)
