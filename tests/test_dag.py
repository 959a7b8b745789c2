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
STAGE_TASKS = ["check_inputs", "score", "factorize", "write_shards", "validate", "commit"]
TASKS = ["check", "build", "publish", "prune"]  # the default layout: one spark-submit
STAGED = ["check", *STAGE_TASKS, "publish", "prune"]  # CURINDEX_SPARK_TASKS=stages
# curindex itself is imported at parse time (light), none of these
HEAVY_MODULES = ("pyspark", "numpy", "pandas", "pyarrow", "torch", "faiss", "transformers",
                 "curindex.pipeline", "curindex.search.searcher")
TIMEOUTS = {"check": 30, "build": 1260, "publish": 60, "prune": 30}  # minutes
STAGE_TIMEOUTS = {"check_inputs": 60, "score": 720, "factorize": 60, "write_shards": 180,
                  "validate": 180, "commit": 60}
FAILURES: list[dict] = []  # what the DAG's failure hook (CURINDEX_ON_FAILURE) was called with


def record_failure(context) -> None:
    """The CURINDEX_ON_FAILURE hook of these tests."""
    FAILURES.append({"run_id": context["dag_run"].run_id})
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
    sparse = tiny_config(corpus, store=root / "store-sparse",
                         index={"kind": "sparse", "methods": ["bi-rerank", "bi-seeded"]},
                         sparse={"neighbours": 5, "random_items": 3, "synthetic_queries": 40,
                                 "hidden": 16, "epochs": 5},
                         validate={"ks": [10], "budgets": [20], "seed_sizes": [10],
                                   "rounds": [2]},
                         spark={"conf": SPARK_CONF})
    configs["sparse"] = root / "sparse.toml"
    configs["sparse"].write_text(toml(sparse))
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
        "CURINDEX_ON_FAILURE": "test_dag:record_failure",
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


def run_dag(dag, config: Path, *, logical_date: datetime = LOGICAL_DATE, **params):
    """One dag.test() run; returns the run and {task id: (state, try)}. Every task keeps its
    retries (a second apart): a deterministic failure shows as a failed first try."""
    saved = {t.task_id: t.retry_delay for t in dag.tasks}
    for t in dag.tasks:
        t.retry_delay = timedelta(seconds=1)
    try:
        run = dag.test(logical_date=logical_date, run_conf={"config": str(config), **params})
    finally:
        for t in dag.tasks:
            t.retry_delay = saved[t.task_id]
    return run, {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def xcom(run, task_id: str):
    """The return value a task of `run` pushed."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        (row,) = session.scalars(XComModel.get_many(run_id=run.run_id, task_ids=task_id,
                                                    key="return_value")).all()
        return XComModel.deserialize_value(row)


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


@pytest.fixture(scope="module")
def staged_dag(airflow_home):
    """The DAG parsed with CURINDEX_SPARK_TASKS=stages: one spark-submit per stage."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURINDEX_SPARK_TASKS", "stages")
        bag = DagBag(dag_folder=str(DAG_FILE.parent))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_dag_file_parses_with_tags_retries_and_params(dag, staged_dag, airflow_home):
    assert set(dag.tags) >= {"curindex"}
    assert all(t.retries >= 1 for t in dag.tasks) and dag.default_args["retries"] >= 1
    assert [t.task_id for t in dag.topological_sort()] == TASKS
    assert set(dag.params) == {"config", "spark_conn_id", "spark_conf", "spark_submit",
                               "keep_versions", "base", "allow_scorer_change", "check_scorer"}
    assert dag.params["base"] == ""  # a full build unless a run asks for an incremental one
    assert dag.params["config"] == str(airflow_home["configs"]["good"])
    assert dag.params["spark_conn_id"] == "spark_default"
    assert dag.params["allow_scorer_change"] is False and dag.params["check_scorer"] is True
    assert dag.max_active_runs == 1 and dag.catchup is False and "## Deploy" in dag.doc_md
    assert dag.dagrun_timeout == timedelta(hours=24) and dag.on_failure_callback is not None
    (asset,) = dag.task_dict["publish"].outlets
    assert (asset.name, asset.uri) == ("curindex-store", airflow_home["env"]["CURINDEX_STORE_URI"])
    build = dag.task_dict["build"]
    # the job inside the curindex package the DAG processor imports (here: this checkout's)
    import curindex

    assert build.application == str(Path(curindex.__file__).parent / "pipeline" / "job.py")
    assert build.application_args == ["--conf", "{{ params.config }}", "--version",
                                      "{{ curindex_version(dag_run) }}", "--base",
                                      "{{ params.base }}"]  # every stage, resumed inside
    assert build.conn_id == "{{ params.spark_conn_id }}"  # chosen per run
    assert {t.task_id: t.execution_timeout for t in dag.tasks} == {
        t: timedelta(minutes=m) for t, m in TIMEOUTS.items()}
    assert [t.task_id for t in staged_dag.topological_sort()] == STAGED
    assert staged_dag.task_dict["score"].application_args[-2:] == ["--stage", "score"]
    assert staged_dag.task_dict["check_inputs"].application_args[-4:] == [
        "--stage", "prepare", "--base", "{{ params.base }}"]
    assert {t: staged_dag.task_dict[t].execution_timeout for t in STAGE_TASKS} == {
        t: timedelta(minutes=m) for t, m in STAGE_TIMEOUTS.items()}


def test_every_spark_submit_argument_is_accepted_by_name(dag):
    """A run's spark_submit param may name any argument of the provider's operator (the
    provider's own signature); a name it does not have fails the task without a retry."""
    import inspect

    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
    from airflow.sdk.exceptions import AirflowFailException

    build = dag.task_dict["build"]
    own = {"application", "application_args", "conf", "conn_id"}
    names = {n for n, p in inspect.signature(SparkSubmitOperator.__init__).parameters.items()
             if p.kind == p.KEYWORD_ONLY} - own
    assert {"archives", "num_executors", "executor_memory", "executor_cores", "driver_memory",
            "deploy_mode", "yarn_queue", "total_executor_cores", "spark_binary"} <= names
    with pytest.raises(AirflowFailException, match="'num_executor' is not an argument"):
        build.apply_submit_args({"num_executor": 2})


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
    # the build's summary is the Spark task's XCom, the manifest's figures
    summary = xcom(rebuilt["run"], "build")
    assert (summary["version"], summary["items"]) == (VERSION, 300)
    assert summary["recall"] == manifest["validation"]["recall"]
    assert xcom(rebuilt["run"], "check")["ok"] is True


def test_rerun_of_the_same_logical_date_leaves_the_version_untouched(rebuilt, dag,
                                                                     airflow_home, capfd):
    store = rebuilt["store"]
    history = store.history()
    run, tasks = run_dag(dag, airflow_home["configs"]["good"], keep_versions=1)
    out = capfd.readouterr()
    assert run.state == "success" and tasks == {t: ("success", 1) for t in TASKS}
    log = out.out + out.err
    assert log.count(f"version {VERSION} is already committed from this config") == 1
    assert "Spark-Submit cmd" not in log
    assert store.current() == VERSION and store.list_versions() == [VERSION]
    assert store.history() == history  # publishing the current version again changes nothing
    path = Path(store.root) / "versions" / VERSION / "manifest.json"
    assert path.read_bytes() == rebuilt["manifest"]  # the same files, byte for byte
    store.verify(VERSION)


def test_a_missing_config_fails_the_first_task_without_retry(dag, airflow_home):
    FAILURES.clear()
    missing = airflow_home["root"] / "no-such.toml"
    run, tasks = run_dag(dag, missing, logical_date=LOGICAL_DATE + timedelta(days=1))
    assert run.state == "failed"
    assert tasks == {"check": ("failed", 1), "build": ("upstream_failed", 0),
                     "publish": ("upstream_failed", 0), "prune": ("upstream_failed", 0)}
    assert dag.task_dict["check"].retries == 2  # it had retries, and took none
    assert [{"run_id": run.run_id}] == FAILURES  # the failure hook was called, once


def test_a_build_lock_held_elsewhere_fails_the_build_without_retry(rebuilt, dag, airflow_home):
    """The job's curindex error reaches the task through its summary file: a lock another
    build holds (ConflictError) is not retried."""
    from curindex.ops.dag_tasks import version_for_run

    when = LOGICAL_DATE + timedelta(days=2)
    version = version_for_run(when, "")
    lock = rebuilt["store"].build_lock(version)
    lock.acquire()
    try:
        _, tasks = run_dag(dag, airflow_home["configs"]["good"], logical_date=when)
    finally:
        lock.release()
    assert tasks["check"] == ("success", 1) and tasks["build"] == ("failed", 1)
    assert dag.task_dict["build"].retries == 2  # it had retries, and took none
    assert version not in rebuilt["store"].list_versions()


def test_publishing_another_scorer_needs_the_runs_consent(rebuilt, dag, airflow_home):
    """A version built with another scorer than the current one's fails publish (no retry)
    unless the run sets allow_scorer_change. (Its build is committed beforehand, from the
    same files with the other scorer recorded, so no Spark task runs.)"""
    from curindex.config import load_config
    from curindex.ops.dag_tasks import version_for_run
    from curindex.scoring.base import fingerprint_for

    store, when = rebuilt["store"], LOGICAL_DATE + timedelta(days=3)
    raw = tiny_config({"items_path": airflow_home["root"] / "items.jsonl",
                       "queries_path": airflow_home["root"] / "queries.jsonl"},
                      store=airflow_home["root"] / "store-good",
                      scorer={"options": {"dim": "16"}},  # another toy scorer
                      validate={"ks": [10], "budgets": [20]}, spark={"conf": SPARK_CONF})
    other = airflow_home["root"] / "other.toml"
    other.write_text(toml(raw))
    cfg, version = load_config(other), version_for_run(when, "")
    m = store.read_manifest(VERSION)
    body = {k: v for k, v in m.items() if k not in ("version", "created_at", "files")}
    body |= {"config": cfg.to_dict(),
             "scorer": {"kind": "toy", "fingerprint": fingerprint_for(cfg.scorer)}}
    store.begin_version(version)
    store.commit_version(version, body, [store.write_bytes(version, rel,
                                                           store.read_bytes(VERSION, rel))
                                         for rel in m["files"]])
    run, tasks = run_dag(dag, other, logical_date=when)
    assert run.state == "failed" and store.current() == VERSION
    assert tasks == {"check": ("success", 1), "build": ("success", 1),
                     "publish": ("failed", 1), "prune": ("upstream_failed", 0)}
    assert dag.task_dict["publish"].retries == 2  # it had retries, and took none
    run, tasks = run_dag(dag, other, logical_date=when, allow_scorer_change=True)
    assert run.state == "success" and store.current() == version


def test_failed_quality_gate_fails_the_run_and_publishes_nothing(rebuilt, staged_dag,
                                                                 airflow_home, capfd,
                                                                 monkeypatch):
    """One spark-submit per stage (CURINDEX_SPARK_TASKS=stages), with the run's connection,
    Spark settings and SparkSubmitOperator arguments on every command line."""
    import tarfile

    from curindex.store import Store

    archive = airflow_home["root"] / "env.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(airflow_home["configs"]["good"], arcname="good.toml")
    monkeypatch.setenv("CURINDEX_SPARK_TASKS", "stages")  # dag.test() parses the file again
    run, tasks = run_dag(staged_dag, airflow_home["configs"]["weak"],
                         spark_conn_id="spark_other",
                         spark_conf={"spark.sql.shuffle.partitions": "3"},
                         spark_submit={"num_executors": 1, "archives": f"{archive}#env"})
    out = capfd.readouterr()
    log = out.out + out.err
    assert run.state == "failed"
    assert tasks == {"check": ("success", 1), **{t: ("success", 1) for t in STAGE_TASKS},
                     "publish": ("failed", 1), "prune": ("upstream_failed", 0)}
    assert "--conf spark.driver.host=127.0.0.1" in log  # from the config file's [spark.conf]
    assert "--conf spark.sql.shuffle.partitions=3" in log  # the spark_conf param over it
    # the run's spark_conn_id param chose the connection (and so the master) of every stage,
    # and its spark_submit arguments reached every spark-submit command line
    assert log.count("--master local[2,1]") == len(STAGE_TASKS)
    assert "--master local[2] " not in log
    assert log.count("--num-executors 1") == len(STAGE_TASKS)
    assert log.count(f"--archives {archive}#env") == len(STAGE_TASKS)
    assert re.search(rf"QualityGateError: version {VERSION} is below its recall thresholds "
                     r"and cannot be published: Top-10-Recall@20 = 0\.\d{4} < 1\.0000", log)
    # Spark's own logs at WARN: no Spark INFO line; the summary as one line
    assert not re.search(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ", log)
    (line,) = [x for x in log.splitlines() if "curindex summary: " in x and "quality_gate" in x]
    summary, _ = json.JSONDecoder().raw_decode(line.split("curindex summary: ", 1)[1])
    assert summary["stage"] == "commit" and summary["version"] == VERSION
    store = Store.open(str(airflow_home["root"] / "store-weak"))
    assert store.current() is None and store.history() == []
    assert store.list_versions() == [VERSION]  # committed, kept for inspection, unpublished
    weak = store.read_manifest(VERSION)
    assert weak["validation"]["passed"] is False
    assert summary["recall"] == weak["validation"]["recall"]
    # Same inputs, same logical date: the same version id and the same index files as the first
    # run (the thresholds do not touch them), although built from scratch in another store, one
    # stage per application. The report, which states the thresholds and timings, differs.
    good = rebuilt["store"].read_manifest(VERSION)["files"]
    index = {rel: entry for rel, entry in weak["files"].items() if not rel.startswith("report/")}
    assert index == {rel: entry for rel, entry in good.items() if not rel.startswith("report/")}
    assert {"G.npy", "shards/shard-00000.faiss", "shards/ids-00002.arrow"} <= set(index)


def test_the_dag_runs_a_sparse_build(dag, airflow_home):
    """`[index] kind = "sparse"` through the same DAG: checked, built (training pairs, fitted
    maps), validated (pooled: the index costs far less than scoring every item would), gated
    and published."""
    from curindex.search import Searcher
    from curindex.store import Store

    run, tasks = run_dag(dag, airflow_home["configs"]["sparse"],
                         logical_date=LOGICAL_DATE + timedelta(days=30), keep_versions=5)
    assert run.state == "success" and tasks == {t: ("success", 1) for t in TASKS}
    store = Store.open(str(airflow_home["root"] / "store-sparse"))
    version = store.current()
    manifest = store.read_manifest(version)
    assert manifest["config"]["index"]["kind"] == "sparse"
    assert manifest["counts"]["index_pairs"] == manifest["sparse"]["pairs"] > 0
    assert manifest["validation"]["ground_truth"] == "pooled"
    (result,) = Searcher.open(store.uri).search(["river data"], k=2, budget=30,
                                                method="bi-seeded")
    assert len(result.ids) == 2 and result.model_calls == 30
