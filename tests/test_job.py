"""The build job, run as users run it: `curindex build` (the job inside the package, through
spark-submit) and the checkout's thin spark-submit entry, jobs/build_index.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from curindex.cli import exits
from curindex.search import Searcher
from curindex.store import Store
from support import spark_submit, tiny_config, to_toml

pytestmark = pytest.mark.spark


def curindex_build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curindex", "build", *args],
                          capture_output=True, text=True, timeout=900, env=dict(os.environ))


def test_curindex_build_publishes_and_its_gate_refuses(tiny_corpus, tmp_path):
    cfg = tiny_config(tiny_corpus, spark={"conf": {"spark.driver.host": "127.0.0.1"}},
                      validate={"ks": [10], "budgets": [20]})
    conf = tmp_path / "build.toml"
    conf.write_text(to_toml(cfg))
    done = curindex_build("--conf", str(conf), "--version", "from-cli", "--publish",
                          "--master", "local[2]", "-o", "json",
                          "--", "--conf", "spark.ui.enabled=false")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # stdout holds the summary alone
    assert summary["version"] == "from-cli" and summary["published"] is True
    assert summary["items"] == 300
    # spark-submit's own output went to stderr, with the options given after --
    assert "--conf spark.ui.enabled=false" in done.stderr
    assert "curindex/pipeline/job.py" in done.stderr
    store = Store.open(cfg["store"]["uri"])
    assert store.current() == "from-cli"
    assert len(Searcher.open(store.uri).search(["river"], k=2, budget=30)[0].ids) == 2

    weak = tmp_path / "weak.toml"
    weak.write_text(to_toml({**cfg, "validate": {"ks": [10], "budgets": [20],
                                                 "min_recall": {"10@20": 1.0}}}))
    done = curindex_build("--conf", str(weak), "--version", "weak", "--publish", "-o", "json")
    assert (done.returncode, done.stdout) == (exits.GATE, ""), done.stderr[-3000:]
    assert "version weak was built into" in done.stderr
    assert "below its recall thresholds" in done.stderr
    assert store.current() == "from-cli" and "weak" in store.list_versions()


def test_the_thin_spark_submit_entry_reports_a_bad_config(tiny_corpus, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml({**tiny_config(tiny_corpus), "anchors": {"n_items": 99,
                                                                    "n_queries": 10}}))
    proc = spark_submit(bad)
    assert proc.returncode == 2
    # spark-submit's PythonRunner merges the driver's stderr into its stdout.
    assert "bad.toml: [anchors] n_items: k_i = 99 > k_q" in proc.stdout + proc.stderr
