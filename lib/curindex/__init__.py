"""curindex: distributed CUR (ANNCUR) index builds for cross-encoder relevance models."""

from curindex.errors import (
    ConfigError,
    CurIndexError,
    FactorizeError,
    InputError,
    QualityGateError,
    ScorerError,
    StoreError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CurIndexError",
    "FactorizeError",
    "InputError",
    "QualityGateError",
    "ScorerError",
    "StoreError",
    "__version__",
]
