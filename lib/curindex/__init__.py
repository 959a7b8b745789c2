"""curindex: distributed CUR (ANNCUR) index builds for cross-encoder relevance models.

``import curindex`` stays light (no torch, faiss, pyspark or transformers): the query-time API
is imported on first use::

    from curindex import Searcher, SearchResult
    searcher = Searcher.open("/indexes/products")
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curindex.errors import (
    ConfigError,
    ConflictError,
    CurIndexError,
    FactorizeError,
    InputError,
    IntegrityError,
    QualityGateError,
    ScorerChangeError,
    ScorerError,
    StoreError,
    StoreNotFoundError,
    VersionNotFoundError,
)

if TYPE_CHECKING:
    from curindex.search import Searcher, SearchResult

__version__ = "0.1.0"

# Names imported from their module on first access (module __getattr__, PEP 562), so that
# `import curindex` does not load torch and faiss.
_LAZY = {"Searcher": "curindex.search.searcher", "SearchResult": "curindex.search.searcher"}

__all__ = [
    "ConfigError",
    "ConflictError",
    "CurIndexError",
    "FactorizeError",
    "InputError",
    "IntegrityError",
    "QualityGateError",
    "ScorerChangeError",
    "ScorerError",
    "SearchResult",
    "Searcher",
    "StoreError",
    "StoreNotFoundError",
    "VersionNotFoundError",
    "__version__",
    "build_job_path",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'curindex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def build_job_path() -> str:
    """The path of the build job that spark-submit runs (``curindex/pipeline/job.py`` of the
    installed package), found without importing the pipeline, which imports pyspark.

    ``curindex build`` and the Airflow DAG submit this file. Raises CurIndexError when the
    package is not installed as plain files (a zip import), since spark-submit needs a path.
    """
    from importlib.resources import files

    path = Path(str(files("curindex").joinpath("pipeline", "job.py")))
    if not path.is_file():
        raise CurIndexError(f"the build job {path} is not a file: install curindex as files "
                            "(pip install 'curindex[spark]'), not zipped")
    return str(path)
