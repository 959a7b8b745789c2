"""The dense (CUR) build kind: an item's features are its exact scores on the k_q anchor
queries (the first k_q columns of its score row), its vector ``e = G h``
(``curindex.kinds.cur``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from curindex.kinds.cur import item_vectors


@dataclass(frozen=True)
class DenseFeatures:
    g: np.ndarray  # [k_i, k_q]
    k_q: int

    @property
    def h_dim(self) -> int:
        return self.k_q

    def h(self, scores: np.ndarray, bi: Callable[[], np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(scores[:, : self.k_q], dtype=np.float32)

    def e(self, h: np.ndarray) -> np.ndarray:
        return item_vectors(h, self.g)
