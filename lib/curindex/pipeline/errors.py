"""Turn errors raised inside Spark's Python workers back into curindex errors on the driver.

A worker's exception reaches the driver as a PythonException whose text holds the worker's
traceback; users should see the same ScorerError/InputError they would see locally, with its
message, not a Java stack trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.errors import PythonException

from curindex import errors

_WORKER_ERROR = re.compile(
    r"curindex\.errors\.(\w+Error): (.+?)(?:\n\S|\Z)", re.S
)


@contextmanager
def worker_errors() -> Iterator[None]:
    """Re-raise a curindex error raised on an executor as itself, chained to Spark's error."""
    try:
        yield
    except PythonException as e:
        m = _WORKER_ERROR.search(str(e))
        cls = getattr(errors, m.group(1), None) if m else None
        if cls is None or not issubclass(cls, errors.CurIndexError):
            raise
        raise cls(m.group(2).strip()) from e
