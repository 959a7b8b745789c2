"""The spark-submit entry point, run as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curindex.search import Searcher
from curindex.store import Store
from support import spark_submit, tiny_config, to_toml

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parents[1]


def test_spark_submit_builds_and_publishes(tiny_corpus, tmp_path):
    cfg = tiny_config(tiny_corpus, spark={"conf": {"spark.driver.host": "127.0.0.1",
                                                   "spark.ui.enabled": "false"}})
    conf = tmp_path / "build.toml"
    conf.write_text(to_toml(cfg))
    proc = spark_submit(conf, "--version", "from-cli", "--publish")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{\n"):])
    assert summary["version"] == "from-cli" and summary["published"] is True
    assert summary["items"] == 300
    assert Store.open(cfg["store"]["uri"]).current() == "from-cli"
    assert len(Searcher.open(cfg["store"]["uri"]).search(["river"], k=2, budget=30)[0].ids) == 2

    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml({**cfg, "anchors": {"n_items": 99, "n_queries": 10}}))
    proc = spark_submit(bad)
    assert proc.returncode == 2
    # spark-submit's PythonRunner merges the driver's stderr into its stdout.
    assert "bad.toml: [anchors] n_items: k_i = 99 > k_q" in proc.stdout + proc.stderr
