"""Errors raised by curindex. Every message names the input and the problem."""


class CurIndexError(Exception):
    """Base class of every error curindex raises on purpose."""


class ConfigError(CurIndexError):
    """A config file is missing, malformed, or holds an unknown key, a wrong type or an
    impossible value."""


class InputError(CurIndexError):
    """The item corpus or the query source is missing, empty or malformed."""


class ScorerError(CurIndexError):
    """A scorer could not be loaded, or returned something other than finite float scores of
    the expected shape."""


class FactorizeError(CurIndexError):
    """The anchor intersection matrix cannot be inverted into a usable index."""


class StoreError(CurIndexError):
    """The index store holds something missing, corrupt or not allowed, or a write lost a race."""


class QualityGateError(CurIndexError):
    """A version's measured recall is below the thresholds its config sets, so it cannot be
    published."""


class ScorerChangeError(QualityGateError):
    """A version built with another scorer than the current version's would change the model
    every reader loads; publishing it needs an explicit allow_scorer_change."""


class StoreNotFoundError(StoreError):
    """The store named does not exist (readers never create one)."""


class VersionNotFoundError(StoreError):
    """The version named does not exist or is incomplete, or nothing has been published."""


class IntegrityError(StoreError):
    """A stored file differs from what its manifest records (missing, wrong size or sha256), or
    a manifest is unreadable or fails its signature."""


class ConflictError(StoreError):
    """Another writer got there first: a publish lost its compare-and-swap, or a lock is held."""
