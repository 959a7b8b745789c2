"""The Airflow DAG dags/curindex_rebuild.py: parsed by a DagBag, and run for real with dag.test()
against Spark local mode on a small generated corpus.

Airflow reads its settings when it is first imported, so it is imported only inside the
fixtures and tests, after the `airflow_home` fixture has set a throwaway AIRFLOW_HOME.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from support import make_texts, tiny_config, write_corpus

ROOT = Path(__file__).resolve().parents[1]
DAG_FILE = ROOT / "dags" / "curindex_rebuild.py"
DAG_ID = "curindex_rebuild"
LOGICAL_DATE = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
VERSION = "rebuild-20260102T030000Z"
SPARK_TASKS = ["check_inputs", "score", "factorize", "write_shards", "validate", "commit"]
TASKS = [*SPARK_TASKS, "publish", "prune"]
# curindex itself is imported at parse time (light), none of these
HEAVY_MODULES = ("pyspark", "numpy", "pandas", "pyarrow", "torch", "faiss", "transformers",
                 "curindex.pipeline", "curindex.search.searcher")
TIMEOUTS = {"check_inputs": 60, "score": 720, "factorize": 60, "write_shards": 180,
            "validate": 180, "commit": 60, "publish": 60, "prune": 30}  # minutes
# Each stage is a short-lived JVM on a tiny corpus: JIT compilation and whole-stage code
# generation would cost more CPU than they save.
SPARK_CONF = {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false",
              "spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2",
              "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
              "spark.sql.codegen.wholeStage": "false"}


def toml(d: dict) -> str:
    """TOML of a config dict: tables of scalars, lists and inline tables."""

    def value(v) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    return "".join(f"[{name}]\n" + "".join(f"{json.dumps(k)} = {value(v)}\n"
                                           for k, v in values.items())
                   for name, values in d.items())


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """A throwaway Airflow home with a migrated metadata DB, a Spark connection to local[2],
    and a generated corpus with two build configs (a passing and a failing quality gate)."""
    root = tmp_path_factory.mktemp("airflow")
    items = make_texts(300, seed=1, prefix="doc")
    queries = make_texts(120, seed=2, prefix="q", min_words=2, max_words=5)
    corpus = write_corpus(root, items, queries)
    configs = {}
    for name, floor in (("good", 0.5), ("weak", 1.0)):  # Top-10-Recall@20 is 0.87 here
        cfg = tiny_config(corpus, store=root / f"store-{name}",
                          validate={"ks": [10], "budgets": [20], "min_recall": {"10@20": floor}},
                          spark={"conf": SPARK_CONF})
        configs[name] = root / f"{name}.toml"
        configs[name].write_text(toml(cfg))
    env = {
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        # another connection a run can choose (local[N,F]: N threads, F task failures allowed)
        "AIRFLOW_CONN_SPARK_OTHER": json.dumps({"conn_type": "spark", "host": "local[2,1]"}),
        # spark-submit of this venv, found on PATH as a worker finds it
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "CURINDEX_STORE_URI": str(root / "store-good"),
        "CURINDEX_CONF": str(configs["good"]),
    }
    # Importing airflow configures logging: a root handler on the stdout of that moment.
    handlers, level = logging.root.handlers[:], logging.root.level
    with pytest.MonkeyPatch.context() as mp:
        for key, val in env.items():
            mp.setenv(key, val)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                       capture_output=True, timeout=300)
        yield {"root": root, "configs": configs, "env": env}
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


@pytest.fixture(scope="module")
def dag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE.parent))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def run_dag(dag, config: Path, **params):
    """One dag.test() run at LOGICAL_DATE; returns the run and {task id: (state, try)}.

    A Spark task fails at once here rather than after its retries; publish keeps its retries,
    to show that a failed quality gate is not retried."""
    saved = {t.task_id: (t.retries, t.retry_delay) for t in dag.tasks}
    for t in dag.tasks:
        t.retries = t.retries if t.task_id == "publish" else 0
        t.retry_delay = timedelta(seconds=1)
    try:
        run = dag.test(logical_date=LOGICAL_DATE, run_conf={"config": str(config), **params})
    finally:
        for t in dag.tasks:
            t.retries, t.retry_delay = saved[t.task_id]
    return run, {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def fake_version(store, version: str) -> None:
    store.begin_version(version)
    store.commit_version(version, {"note": "an older build"},
                         [store.write_bytes(version, "data.bin", b"old")])


@pytest.fixture(scope="module")
def rebuilt(airflow_home, dag):
    """The DAG run once at LOGICAL_DATE into a store holding two older versions."""
    from curindex.store import Store

    store = Store.open(str(airflow_home["root"] / "store-good"), create=True)
    for old in ("old-1", "old-2"):
        fake_version(store, old)
    run, tasks = run_dag(dag, airflow_home["configs"]["good"], keep_versions=1)
    return {"run": run, "tasks": tasks, "store": store,
            "manifest": (Path(store.root) / "versions" / VERSION / "manifest.json").read_bytes()}


def test_dag_file_parses_with_tags_retries_and_params(dag, airflow_home):
    assert set(dag.tags) >= {"curindex"}
    assert all(t.retries >= 1 for t in dag.tasks) and dag.default_args["retries"] >= 1
    assert [t.task_id for t in dag.topological_sort()] == TASKS
    assert set(dag.params) == {"config", "spark_conn_id", "spark_conf", "keep_versions", "base"}
    assert dag.params["base"] == ""  # a full build unless a run asks for an incremental one
    assert dag.params["config"] == str(airflow_home["configs"]["good"])
    assert dag.params["spark_conn_id"] == "spark_default"
    assert dag.max_active_runs == 1 and dag.catchup is False and "## Deploy" in dag.doc_md
    (asset,) = dag.task_dict["publish"].outlets
    assert (asset.name, asset.uri) == ("curindex-store", airflow_home["env"]["CURINDEX_STORE_URI"])
    spark_task = dag.task_dict["score"]
    # the job inside the curindex package the DAG processor imports (here: this checkout's)
    import curindex

    assert spark_task.application == str(Path(curindex.__file__).parent / "pipeline" / "job.py")
    assert spark_task.application_args[-2:] == ["--stage", "score"]
    assert spark_task.conn_id == "{{ params.spark_conn_id }}"  # chosen per run
    assert {t.task_id: t.execution_timeout for t in dag.tasks} == {
        t: timedelta(minutes=m) for t, m in TIMEOUTS.items()}
    assert dag.task_dict["check_inputs"].application_args[-4:] == [
        "--stage", "prepare", "--base", "{{ params.base }}"]


def parse_alone(env: dict[str, str], *, without_curindex: bool = False) -> dict:
    """Parse the DAG file in a fresh process, as the DAG processor does: its import errors,
    DAGs, heavy modules imported, and the config param and asset URI it got."""
    block = (
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'curindex' or name.startswith('curindex.'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
    ) if without_curindex else ""
    script = (
        "import json, sys\n" + block +
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAG_FILE)!r})\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "dag = bag.dags.get('curindex_rebuild')\n"
        "print(json.dumps({'errors': list(bag.import_errors.values()), 'dags': list(bag.dags),"
        " 'heavy': heavy, 'config': dag and dag.params['config'],"
        " 'asset': dag and dag.task_dict['publish'].outlets[0].uri}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env,
                         text=True, timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_dag_file_imports_nothing_heavy(airflow_home):
    """What the DAG processor pays to parse the file: curindex (light), no Spark, numpy,
    torch or faiss, no errors."""
    got = parse_alone(dict(os.environ))
    assert (got["errors"], got["dags"], got["heavy"]) == ([], [DAG_ID], [])


def test_dag_file_parses_without_curindex_settings(airflow_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURINDEX_")}
    got = parse_alone(env)
    assert (got["errors"], got["dags"]) == ([], [DAG_ID])
    assert (got["config"], got["asset"]) == ("/etc/curindex/rebuild.toml", "curindex-store")
    got = parse_alone({**env, "CURINDEX_TASK_TIMEOUTS": '{"score": 0}'})
    assert got["dags"] == [] and "CURINDEX_TASK_TIMEOUTS" in got["errors"][0]


def test_dag_file_without_curindex_fails_to_parse_naming_the_fix(airflow_home):
    got = parse_alone(dict(os.environ), without_curindex=True)
    assert got["dags"] == []
    (error,) = got["errors"]
    assert "ImportError" in error
    assert "pip install 'curindex[spark,airflow]' on the DAG processor and the workers" in error


def test_version_id_derives_from_the_run():
    from curindex.ops.dag_tasks import version_for_run
    from curindex.store import validate_version_id

    assert version_for_run(LOGICAL_DATE, "scheduled__whatever") == VERSION
    assert version_for_run(LOGICAL_DATE.astimezone(timezone(timedelta(hours=5))), "x") == VERSION
    a = version_for_run(None, "manual__2026-01-02T03:00:00.123456+00:00")
    b = version_for_run(None, "manual__2026-01-02T03:00:00.123457+00:00")
    assert a != b and a == version_for_run(None, "manual__2026-01-02T03:00:00.123456+00:00")
    for v in (a, b, version_for_run(None, "../" * 100)):
        assert validate_version_id(v) == v


def test_spark_conf_is_the_config_table_with_params_over_it(airflow_home):
    from curindex.ops.dag_tasks import spark_conf

    path = str(airflow_home["configs"]["good"])
    assert spark_conf(path) == SPARK_CONF
    got = spark_conf(path, {"spark.ui.enabled": True, "spark.executor.memory": "2g"})
    assert got == {**SPARK_CONF, "spark.ui.enabled": "true", "spark.executor.memory": "2g"}


def test_run_builds_publishes_and_prunes(rebuilt, airflow_home):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from curindex.search import Searcher

    assert rebuilt["run"].state == "success"
    assert rebuilt["tasks"] == {t: ("success", 1) for t in TASKS}
    store = rebuilt["store"]
    assert store.current() == VERSION
    assert store.list_versions() == [VERSION]  # the older two pruned (keep_versions=1)
    store.verify(VERSION)
    manifest = store.read_manifest(VERSION)
    assert manifest["counts"]["items"] == 300 and manifest["validation"]["passed"] is True
    (result,) = Searcher.open(store.uri).search(["river"], k=2, budget=30)
    assert len(result.ids) == 2
    with create_session() as session:
        events = session.scalars(select(AssetEvent)).all()
        assert [(e.asset.name, e.source_task_id, e.extra["version"], e.extra["store"])
                for e in events] == [("curindex-store", "publish", VERSION, store.uri)]


def test_rerun_of_the_same_logical_date_leaves_the_version_untouched(rebuilt, dag,
                                                                     airflow_home, capfd):
    store = rebuilt["store"]
    history = store.history()
    run, tasks = run_dag(dag, airflow_home["configs"]["good"], keep_versions=1)
    out = capfd.readouterr()
    assert run.state == "success" and tasks == {t: ("success", 1) for t in TASKS}
    log = out.out + out.err
    assert log.count(f"version {VERSION} is already committed from this config") == 6
    assert "Spark-Submit cmd" not in log
    assert store.current() == VERSION and store.list_versions() == [VERSION]
    assert store.history() == history  # publishing the current version again changes nothing
    path = Path(store.root) / "versions" / VERSION / "manifest.json"
    assert path.read_bytes() == rebuilt["manifest"]  # the same files, byte for byte
    store.verify(VERSION)


def test_failed_quality_gate_fails_the_run_and_publishes_nothing(rebuilt, dag, airflow_home,
                                                                 capfd):
    from curindex.store import Store

    run, tasks = run_dag(dag, airflow_home["configs"]["weak"], spark_conn_id="spark_other",
                         spark_conf={"spark.sql.shuffle.partitions": "3"})
    out = capfd.readouterr()
    log = out.out + out.err
    assert run.state == "failed"
    assert tasks == {**{t: ("success", 1) for t in SPARK_TASKS}, "publish": ("failed", 1),
                     "prune": ("upstream_failed", 0)}
    assert "--conf spark.driver.host=127.0.0.1" in log  # from the config file's [spark.conf]
    assert "--conf spark.sql.shuffle.partitions=3" in log  # the spark_conf param over it
    # the run's spark_conn_id param chose the connection (and so the master) of every stage
    assert log.count("--master local[2,1]") == len(SPARK_TASKS)
    assert "--master local[2] " not in log
    assert re.search(rf"quality gate failed: version {VERSION} is below its recall thresholds "
                     r"and cannot be published: Top-10-Recall@20 = 0\.\d{4} < 1\.0000", log)
    store = Store.open(str(airflow_home["root"] / "store-weak"))
    assert store.current() is None and store.history() == []
    assert store.list_versions() == [VERSION]  # committed, kept for inspection, unpublished
    weak = store.read_manifest(VERSION)
    assert weak["validation"]["passed"] is False
    # Same inputs, same logical date: the same version id and the same index files as the first
    # run (the thresholds do not touch them), although built from scratch in another store. The
    # report, which states the thresholds and timings, differs.
    good = rebuilt["store"].read_manifest(VERSION)["files"]
    index = {rel: entry for rel, entry in weak["files"].items() if not rel.startswith("report/")}
    assert index == {rel: entry for rel, entry in good.items() if not rel.startswith("report/")}
    assert {"G.npy", "shards/shard-00000.faiss", "shards/ids-00002.arrow"} <= set(index)
