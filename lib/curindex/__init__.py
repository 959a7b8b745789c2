"""curindex: distributed CUR (ANNCUR) index builds for cross-encoder relevance models."""

from curindex.errors import (
    ConfigError,
    ConflictError,
    CurIndexError,
    FactorizeError,
    InputError,
    IntegrityError,
    QualityGateError,
    ScorerError,
    StoreError,
    StoreNotFoundError,
    VersionNotFoundError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConflictError",
    "CurIndexError",
    "FactorizeError",
    "InputError",
    "IntegrityError",
    "QualityGateError",
    "ScorerError",
    "StoreError",
    "StoreNotFoundError",
    "VersionNotFoundError",
    "__version__",
]
