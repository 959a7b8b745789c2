"""The build on a real Spark standalone cluster (a master and two workers on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from cluster import standalone_cluster
from curindex.store import Store
from support import read_version_vectors, spark_submit, tiny_config, to_toml

pytestmark = pytest.mark.cluster
SPARK_CONF = {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false",
              "spark.executor.memory": "1g", "spark.task.maxFailures": "4"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with standalone_cluster(tmp_path_factory.mktemp("cluster"), n_workers=2, cores=1,
                            env=dict(os.environ)) as c:
        yield c


def build(corpus, root, name: str, *, master: str, **sections) -> tuple[Store, dict]:
    cfg = tiny_config(corpus, store=root / name, spark={"conf": SPARK_CONF}, **sections)
    conf = root / f"{name}.toml"
    conf.write_text(to_toml(cfg))
    proc = spark_submit(conf, "--version", "v", master=master)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return Store.open(cfg["store"]["uri"]), cfg


def test_cluster_build_equals_local_build(cluster, tiny_corpus, tmp_path):
    local, _ = build(tiny_corpus, tmp_path, "local", master="local[2]")
    remote, _ = build(tiny_corpus, tmp_path, "cluster", master=cluster.url)
    ids_l, vec_l = read_version_vectors(local, "v")
    ids_c, vec_c = read_version_vectors(remote, "v")
    assert ids_l == ids_c
    np.testing.assert_array_equal(vec_l, vec_c)
    files_l = local.read_manifest("v")["files"]
    files_c = remote.read_manifest("v")["files"]
    shard_files = [p for p in files_l if p.startswith("shards/")]
    assert shard_files and all(files_l[p] == files_c[p] for p in shard_files)
    assert cluster.state()["completedapps"], "the build never ran on the cluster"


def test_build_survives_losing_a_worker_while_scoring(cluster, tiny_corpus, tmp_path):
    reference, _ = build(tiny_corpus, tmp_path, "reference", master="local[2]")
    slow = {"kind": "callable", "target": "scorers:slow", "options": {"dim": "8",
                                                                     "delay_s": "0.4"}}
    cfg = tiny_config(tiny_corpus, store=tmp_path / "faulty", scorer=slow,
                      spark={"conf": SPARK_CONF, "block_items": 8, "score_partitions": 8})
    conf = tmp_path / "faulty.toml"
    conf.write_text(to_toml(cfg))
    proc = spark_submit(conf, "--version", "v", master=cluster.url, wait=False)
    scores_tmp = tmp_path / "faulty" / "_work" / "v" / "scores" / "_temporary"
    deadline = time.monotonic() + 240
    while not scores_tmp.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scores_tmp.exists(), "scoring never started"
    time.sleep(1.0)  # let both executors get tasks under way
    killed = cluster.kill_worker(2)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert len(killed) >= 2  # the worker and at least its executor
    ids_r, vec_r = read_version_vectors(reference, "v")
    ids_f, vec_f = read_version_vectors(Store.open(str(tmp_path / "faulty")), "v")
    assert ids_r == ids_f
    np.testing.assert_array_equal(vec_r, vec_f)
    summary, _ = json.JSONDecoder().raw_decode(out[out.index("{\n"):])
    assert summary["items"] == 300
