"""What every build kind hands the shared stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curindex.search.methods import Latent


@dataclass(frozen=True)
class QuerySide:
    """What validation's plans need of the kind, per test query."""

    anchor_exact: np.ndarray  # [n_test, k_i] exact scores on the anchor items (k_i 0: none)
    anchor_columns: np.ndarray  # [d_h, k_i] the anchor items' features
    priors: np.ndarray | None  # [n_test, d_h] the sparse kind's query priors, else None
    latent: Latent | None
    rcond: float
