"""The exit codes of the `curindex` command: one per kind of failure, so that a script can tell
a missing version from a corrupt file or a refused quality gate without reading the message.

The error message always goes to stderr (``error: ...``); stdout then holds nothing.
"""

from __future__ import annotations

from curindex.errors import (
    ConfigError,
    ConflictError,
    CurIndexError,
    InputError,
    IntegrityError,
    QualityGateError,
    ScorerError,
    StoreNotFoundError,
    VersionNotFoundError,
)

OK = 0
FAILURE = 1  # not a curindex error: a bug (with its traceback), or spark-submit failing
USAGE = 2  # a bad command line (argparse's own code), or an option value the version refuses
NOT_FOUND = 3  # the store or the version does not exist (StoreNotFoundError, VersionNotFound..)
INTEGRITY = 4  # verify failed: a file is missing, truncated or corrupt (IntegrityError)
GATE = 5  # the quality gate refused the version (QualityGateError)
CONFLICT = 6  # another writer got there first: a lost publish race or a held lock
BAD_INPUT = 7  # a bad config file, input corpus or scorer (ConfigError, InputError, ScorerError)
ERROR = 8  # any other curindex error (a failed factorization, a store refusing a write, ...)
INTERRUPTED = 130  # Ctrl-C
BROKEN_PIPE = 141  # stdout closed before the output was written (`| head`), as for SIGPIPE

EXIT_CODES: dict[int, str] = {
    OK: "success",
    FAILURE: "unexpected failure (a bug, or spark-submit failed without a curindex error)",
    USAGE: "usage error: bad arguments, or an option value the version cannot take",
    NOT_FOUND: "the store or the version does not exist",
    INTEGRITY: "verification failed: a file is missing, truncated or corrupt",
    GATE: "the quality gate refused the version",
    CONFLICT: "another writer got there first (a lost publish race, a held lock)",
    BAD_INPUT: "bad config file, input data or scorer",
    ERROR: "any other curindex error",
    INTERRUPTED: "interrupted (Ctrl-C)",
    BROKEN_PIPE: "stdout was closed early (a broken pipe, e.g. | head)",
}

# Most specific first: IntegrityError and ConflictError are StoreErrors too.
_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    ((StoreNotFoundError, VersionNotFoundError), NOT_FOUND),
    ((IntegrityError,), INTEGRITY),
    ((QualityGateError,), GATE),
    ((ConflictError,), CONFLICT),
    ((ConfigError, InputError, ScorerError), BAD_INPUT),
    ((CurIndexError,), ERROR),
    ((ValueError,), USAGE),
)


def exit_code(error: BaseException) -> int:
    """The exit code for an error a command raised (FAILURE for anything unexpected)."""
    for classes, code in _BY_ERROR:
        if isinstance(error, classes):
            return code
    return FAILURE


def epilog() -> str:
    """The exit codes as the `--help` epilog shows them."""
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in
                                       EXIT_CODES.items())
