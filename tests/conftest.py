"""Shared fixtures: one local SparkSession for the whole run, small generated corpora."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from support import make_texts, write_corpus

TESTS = Path(__file__).resolve().parent
# Spark's Python workers must run this interpreter and import test scorers from tests/.
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
)
sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def spark():
    """The one local SparkSession of the test run (UTC, loopback, 2 cores)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("curindex-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> dict:
    """A generated BEIR-style corpus: 300 items, 120 queries, as JSONL files."""
    return write_corpus(tmp_path, make_texts(300, seed=1, prefix="doc"),
                        make_texts(120, seed=2, prefix="q", min_words=2, max_words=5))


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    """A store on a local folder; test_store_s3.py overrides it with an S3 prefix."""
    return str(tmp_path / "store")


@pytest.fixture
def store(store_uri: str):
    from curindex.store import Store

    return Store.open(store_uri, create=True)


@pytest.fixture(scope="session")
def tiny_published(spark, tmp_path_factory):
    """The config of a tiny published build (version "v": 200 items, the toy scorer, three
    shards), shared by the tests that only read it or work on a copy of its store."""
    from curindex.config import config_from_dict
    from curindex.pipeline import run_build
    from support import tiny_config

    root = tmp_path_factory.mktemp("tiny-published")
    corpus = write_corpus(root, make_texts(200, seed=1, prefix="doc"),
                          make_texts(80, seed=2, prefix="q"))
    cfg = config_from_dict(tiny_config(corpus))
    run_build(spark, cfg, version="v", publish=True)
    return cfg
