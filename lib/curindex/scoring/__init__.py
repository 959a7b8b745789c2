"""Scorers: the Scorer protocol, the built-in implementations, and the per-worker cache."""

from curindex.scoring.base import (
    Scorer,
    ScorerFactory,
    build_scorer,
    checked_scores,
    fingerprint_for,
    get_scorer,
    truncated_mask,
)

__all__ = [
    "Scorer",
    "ScorerFactory",
    "build_scorer",
    "checked_scores",
    "fingerprint_for",
    "get_scorer",
    "truncated_mask",
]
