"""Build kinds: what an index is made of, behind one small interface, one module per kind.

- ``dense`` (the default, ``curindex.kinds.dense``): the CUR build. Every item is scored
  against k_q anchor queries; an item's features ``h`` are those scores and its vector is
  ``e = G h``, with ``G`` the pseudo-inverse of the anchor intersection matrix.
- ``sparse`` (``curindex.kinds.sparse``): training queries are scored against a few items each
  (their bi-encoder neighbours and random items), and maps fitted to those entries give every
  item its features ``h = f(bi)`` from its bi-encoder embedding alone; its vector is ``e = h``.

What the build's stages and the Searcher ask of a kind (``Features``): how a score row
(its scores over the queries scored against every item, and its bi-encoder embedding) becomes
the vectors a version's indexes hold. The Spark side of each kind (which pairs are scored, how
the item vectors are fitted) is ``curindex.pipeline.kinds``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

KINDS = ("dense", "sparse")


class Features(Protocol):
    """How a block of score rows becomes the vectors of its items. Small and picklable: the
    build broadcasts it to the executors."""

    @property
    def h_dim(self) -> int:
        """Width of the features."""
        ...

    def h(self, scores: np.ndarray, bi: Callable[[], np.ndarray]) -> np.ndarray:
        """[n, width] score rows and (on demand) [n, 384] bi-encoder embeddings -> [n, d_h]
        float32 features: what search rounds re-solve a query's vector on."""
        ...

    def e(self, h: np.ndarray) -> np.ndarray:
        """[n, d_h] features -> [n, d_e] float32 item vectors (the version's main index)."""
        ...
