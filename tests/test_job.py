"""The spark-submit entry point, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curindex.search import Searcher
from curindex.store import Store
from support import tiny_config

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parents[1]


def toml(d: dict) -> str:
    out = []
    for section, values in d.items():
        out.append(f"[{section}]")
        for k, v in values.items():
            if isinstance(v, dict):
                out.append(f"{k} = {{ " + ", ".join(f'"{a}" = "{b}"' for a, b in v.items()) + " }")
            else:
                out.append(f"{k} = {json.dumps(v)}")
    return "\n".join(out) + "\n"


def test_spark_submit_builds_and_publishes(tiny_corpus, tmp_path):
    spark_submit = shutil.which("spark-submit", path=str(Path(sys.executable).parent))
    assert spark_submit, "spark-submit is installed with pyspark"
    cfg = tiny_config(tiny_corpus, spark={"conf": {"spark.driver.host": "127.0.0.1",
                                                   "spark.ui.enabled": "false"}})
    conf = tmp_path / "build.toml"
    conf.write_text(toml(cfg))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [spark_submit, "--master", "local[2]", str(ROOT / "jobs" / "build_index.py"),
           "--conf", str(conf), "--version", "from-cli", "--publish"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{\n"):])
    assert summary["version"] == "from-cli" and summary["published"] is True
    assert summary["items"] == 300
    assert Store.open(cfg["store"]["uri"]).current() == "from-cli"
    assert len(Searcher.open(cfg["store"]["uri"]).search(["river"], k=2, budget=30)[0].ids) == 2

    bad = tmp_path / "bad.toml"
    bad.write_text(toml({**cfg, "anchors": {"n_items": 99, "n_queries": 10}}))
    proc = subprocess.run([*cmd[:4], "--conf", str(bad)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    # spark-submit's PythonRunner merges the driver's stderr into its stdout.
    assert "bad.toml: [anchors] n_items: k_i = 99 > k_q" in proc.stdout + proc.stderr
