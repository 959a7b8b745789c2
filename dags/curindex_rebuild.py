"""Scheduled rebuilds of a curindex index: a check without Spark, the build (one spark-submit,
or one per stage), the quality gate, publish and prune, as one Airflow DAG. The DAG's doc_md
below says what it does and how to deploy it.

Deploy from the installed package: ``pip install 'curindex[spark,airflow]'`` on the DAG
processor and the workers, then copy this file alone into the DAGs folder. At parse time only
the standard library, the Airflow SDK, the Spark provider and ``curindex`` itself (which is
light: no Spark, torch or faiss) are imported; the tasks import the rest on the worker.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, Param, chain, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

try:
    import curindex
except ImportError as e:  # the DAG processor shows this as the file's import error
    raise ImportError(
        "dags/curindex_rebuild.py needs the curindex package where the DAG is parsed and run: "
        "pip install 'curindex[spark,airflow]' on the DAG processor and the workers "
        f"(import curindex failed: {e})") from e

DAG_ID = "curindex_rebuild"
# The build job inside the installed package (curindex/pipeline/job.py), unless set.
BUILD_JOB = os.environ.get("CURINDEX_BUILD_JOB") or curindex.build_job_path()
# The store this DAG publishes to, as an Airflow asset. An asset's URI is fixed when the DAG is
# parsed, so it comes from the environment, never from the config file.
STORE_ASSET = Asset(name="curindex-store", uri=os.environ.get("CURINDEX_STORE_URI") or
                    "curindex-store")
# "build": one spark-submit runs the whole build (it resumes, stage by stage, what an earlier
# try completed); "stages": one spark-submit per stage, each a task of its own.
LAYOUTS = ("build", "stages")
SPARK_STAGES = (  # (task id, --stage of the build job) of the "stages" layout
    ("check_inputs", "prepare"),
    ("score", "score"),
    ("factorize", "factorize"),
    ("write_shards", "write_shards"),
    ("validate", "validate"),
    ("commit", "commit"),
)
# How long each task may run before Airflow fails it (and retries it). Scoring is the long
# stage: k_q + n_test queries against every item. CURINDEX_TASK_TIMEOUTS (JSON, task id ->
# minutes; "dagrun" for the whole run) overrides any of them where the DAG is parsed.
TASK_TIMEOUTS = {
    "check": timedelta(minutes=30),
    "build": timedelta(hours=21),
    "check_inputs": timedelta(hours=1),
    "score": timedelta(hours=12),
    "factorize": timedelta(hours=1),
    "write_shards": timedelta(hours=3),
    "validate": timedelta(hours=3),
    "commit": timedelta(hours=1),
    "publish": timedelta(hours=1),  # verifies the sha256 of every file
    "prune": timedelta(minutes=30),
    "dagrun": timedelta(hours=24),
}


def _timeouts() -> dict[str, timedelta]:
    text = os.environ.get("CURINDEX_TASK_TIMEOUTS") or "{}"
    problem = f"CURINDEX_TASK_TIMEOUTS={text!r}: expected a JSON object of task ids " \
              f"({', '.join(TASK_TIMEOUTS)}) to minutes > 0"
    try:
        minutes = json.loads(text)
    except ValueError:
        raise ValueError(problem) from None
    if not isinstance(minutes, dict) or not set(minutes) <= set(TASK_TIMEOUTS) or not all(
            isinstance(m, int | float) and not isinstance(m, bool) and m > 0
            for m in minutes.values()):
        raise ValueError(problem)
    return {**TASK_TIMEOUTS, **{t: timedelta(minutes=m) for t, m in minutes.items()}}


def _layout() -> str:
    layout = os.environ.get("CURINDEX_SPARK_TASKS") or "build"
    if layout not in LAYOUTS:
        raise ValueError(f"CURINDEX_SPARK_TASKS={layout!r}: expected one of {LAYOUTS}")
    return layout


# SparkSubmitOperator arguments a run or the DAG may set (its own signature: every argument
# the installed provider has, so none is dropped); the build sets these four itself.
OWN_ARGS = ("application", "application_args", "conf", "conn_id")
SUBMIT_ARGS = tuple(n for n, p in inspect.signature(SparkSubmitOperator.__init__).parameters
                    .items() if p.kind == p.KEYWORD_ONLY and n not in OWN_ARGS)


def _submit_defaults() -> dict[str, Any]:
    """DAG-level SparkSubmitOperator arguments from CURINDEX_SPARK_SUBMIT (JSON)."""
    text = os.environ.get("CURINDEX_SPARK_SUBMIT") or "{}"
    try:
        args = json.loads(text)
    except ValueError:
        args = None
    if not isinstance(args, dict) or not set(args) <= set(SUBMIT_ARGS):
        raise ValueError(f"CURINDEX_SPARK_SUBMIT={text!r}: expected a JSON object of "
                         f"SparkSubmitOperator arguments ({', '.join(SUBMIT_ARGS)})")
    return args


DOC_MD = """
# curindex_rebuild

Rebuilds a curindex index from its config file, checks it against its quality gate, publishes
it to the index store and prunes old versions.

## Tasks

1. `check`: `curindex check` on the config, without Spark: the config, the inputs' files,
   schemas and row counts against `[anchors]`, the scorer (it loads and scores a pair), the
   store and work folder. Every problem is listed at once and the run fails at once.
2. `build`: one spark-submit of the build job of the installed curindex package
   (`curindex/pipeline/job.py --conf CONFIG --version VERSION`): every stage in one Spark
   application, resuming the stages an earlier try completed. With `CURINDEX_SPARK_TASKS=stages`
   each stage is a task and a spark-submit of its own instead: `check_inputs` (reads and checks
   every row, chooses the anchors), `score`, `factorize`, `write_shards`, `validate`, `commit`
   (six JVM starts instead of one, and each stage retried alone).
3. `publish`: the quality gate. A version whose recall meets `[validate] min_recall` (and, unless
   the run sets `allow_scorer_change`, built with the current version's scorer) becomes the
   store's current version and the asset `curindex-store` is updated; otherwise the task fails
   with the figures in its log and nothing is published (the version stays for inspection).
4. `prune`: deletes the versions beyond the `keep_versions` newest (never the current or the
   previous one).

**Failures.** What a retry cannot mend fails the task at once, without retries: a bad config,
input or scorer, a refused quality gate or scorer change, a failed factorization, a build lock
another live build holds. Anything else (Spark, the cluster, the store's network) is retried
(2 retries, 5 minutes apart). The build job records the curindex error it stopped on in its
summary file; in `deploy_mode` cluster that file is on the cluster, and a failed build counts
as retryable. The DAG's `on_failure_callback` logs a failed run as one line, then calls
`CURINDEX_ON_FAILURE` (`module:function`, imported when the callback runs: where Airflow runs
DAG callbacks, the DAG processor) with the run's context.

**Version id.** A run builds the version `rebuild-<logical date in UTC, YYYYMMDDTHHMMSSZ>`
(a run without a logical date: `rebuild-<run id, made safe>-<8 hex digits>`). A retried task,
or the same run cleared and run again, works on the same version and never on another run's:
a stage overwrites only its own output, a version is invisible until `commit` writes its
manifest and unpublished until `publish`, and once it is committed its Spark tasks submit
nothing and its publish changes nothing, so a re-run leaves the same files. Re-running a run
after its config file changed fails (versions are immutable); re-running an old run makes its
version current again.

**Logs and results.** Spark's own logs are at WARN (the package's `log4j2.properties`, through
`SPARK_SUBMIT_OPTS`, unless the run names its own); curindex logs its stages. The build's
summary (version, items, recall, the served search, seconds per stage) is logged as one line
and returned as the Spark task's XCom.

**Timeouts.** `check` 30 min, `build` 21 h (`check_inputs` 1 h, `score` 12 h, `factorize` 1 h,
`write_shards` 3 h, `validate` 3 h, `commit` 1 h), `publish` 1 h (it hashes every file),
`prune` 30 min, and the whole run 24 h (`dagrun_timeout`). Set `CURINDEX_TASK_TIMEOUTS` (JSON,
task id or `dagrun` to minutes, e.g. `{"build": 2880}`) where the DAG is parsed to change them.

## Params

- `config`: the curindex build config (TOML) on the worker; default `$CURINDEX_CONF`, else
  `/etc/curindex/rebuild.toml`. Its `[store] uri` is where the version is written and published.
- `spark_conn_id` (default `spark_default`): the Airflow Spark connection of this run; its
  host is the master (`local[4]`, `spark://host:7077`, `yarn`, `k8s://...`).
- `spark_conf` (default `{}`): Spark settings, over the config file's `[spark.conf]` table.
- `spark_submit` (default `{}`, over the DAG's `$CURINDEX_SPARK_SUBMIT`): any other argument
  of the provider's `SparkSubmitOperator` by its name, e.g. `{"deploy_mode": "cluster", "archives":
  "hdfs:///envs/curindex.tar.gz#env", "num_executors": 8, "executor_memory": "16g",
  "executor_cores": 4, "yarn_queue": "batch"}` (also `driver_memory`, `total_executor_cores`,
  `spark_binary`, `py_files`, `files`, `jars`, `packages`, `keytab`, `principal`,
  `proxy_user`, `properties_file`, `env_vars`, `verbose`, ...).
- `keep_versions` (default 5): how many versions `prune` keeps.
- `base` (default empty: a full build): a version id, or `current`, to build incrementally on
  (its anchors and G are kept, only new and changed items are scored, untouched shards are
  shared with it); it must have been built with `[index] keep_scores = true`.
- `allow_scorer_change` (default false): publish even when the current version was built with
  another scorer (every reader of the store then loads the new model).
- `check_scorer` (default true): `check` loads the scorer and scores a pair; false when only the
  cluster holds the model (`deploy_mode` cluster).

## Deploy

- The DAG processor and the workers: `pip install 'curindex[spark,airflow]'` (first
  `pip install torch==2.13.0`, the CPU build), which puts `spark-submit` on the environment's
  `PATH`; Java 17 on the workers, and read access to the config file and the inputs. Without
  curindex the file fails to parse with an ImportError saying so. Spark executors need the
  same Python environment (ship it with the `archives` argument and `spark.pyspark.python`, as
  for `curindex build -- --archives ...`) and the model.
- This file, alone, goes into the DAGs folder; the build job comes from the installed package.
- Environment, all optional: `CURINDEX_CONF` (the default config path), `CURINDEX_STORE_URI`
  (the asset's URI: set it to the config's `[store] uri`), `CURINDEX_SCHEDULE` (default
  `@daily`), `CURINDEX_SPARK_TASKS` (`build`, the default, or `stages`),
  `CURINDEX_SPARK_SUBMIT` (JSON: SparkSubmitOperator arguments for every run),
  `CURINDEX_TASK_TIMEOUTS`, `CURINDEX_ON_FAILURE`, `CURINDEX_BUILD_JOB` (another path of the
  build job).
- A Spark connection: `airflow connections add spark_default --conn-type spark --conn-host
  yarn`, or `AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[4]"}'`.
- One rebuild by hand: `airflow dags trigger curindex_rebuild --conf '{"config":
  "/etc/curindex/products.toml", "keep_versions": 3}'`.
- Downstream DAGs (a serving reload) can run on `schedule=[Asset.ref(name="curindex-store")]`;
  each event's extra holds `store`, `version` and `recall`.
"""


def curindex_version(dag_run: Any) -> str:
    """The version id of a DAG run (a template macro: ``{{ curindex_version(dag_run) }}``)."""
    from curindex.ops.dag_tasks import version_for_run

    return version_for_run(dag_run.logical_date, dag_run.run_id)


@contextmanager
def failing_fast() -> Iterator[None]:
    """A curindex error that a retry cannot mend fails the task at once (no retry); any
    other error is raised as it is (and retried)."""
    from curindex.ops.submit import DETERMINISTIC

    try:
        yield
    except DETERMINISTIC as e:
        raise AirflowFailException(f"{type(e).__name__}: {e}") from e


def on_failure(context: Any) -> None:
    """The run's failure as one log line, then the callable CURINDEX_ON_FAILURE names."""
    from curindex.ops.dag_tasks import failure_hook

    failure_hook(context, os.environ.get("CURINDEX_ON_FAILURE", ""))


class BuildStage(SparkSubmitOperator):
    """The build job (or one stage of it) submitted with the provider's operator and hook as
    they are: ``conn_id`` is a templated field (``{{ params.spark_conn_id }}``), and the Spark
    settings (the config file's ``[spark.conf]`` with the ``spark_conf`` param over it), the
    run's ``spark_submit`` arguments over the DAG's, and the job's ``--summary`` file are set
    on the operator when the task runs, before the provider's ``execute``. A version already
    committed from the same config submits nothing. Returns the job's summary (an XCom)."""

    template_fields: Sequence[str] = (*SparkSubmitOperator.template_fields, "conn_id")

    def __init__(self, *, conn_id: str = "{{ params.spark_conn_id }}", **kwargs: Any) -> None:
        # Run as a script, the job's folder would come first on sys.path, where the package's
        # pipeline/select.py hides the standard library's `select`.
        kwargs["env_vars"] = {"PYTHONSAFEPATH": "1", **(kwargs.get("env_vars") or {})}
        super().__init__(conn_id=conn_id, **kwargs)
        self.conn_id = conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        import tempfile

        from curindex.ops.dag_tasks import committed_summary, spark_conf, submit_env_vars
        from curindex.ops.submit import job_error, one_line, read_summary

        params, version = context["params"], curindex_version(context["dag_run"])
        with failing_fast():
            done = committed_summary(params["config"], version)
            if done is not None:
                self.log.info("version %s is already committed from this config: nothing to "
                              "do", version)
                return done
            self.conf = spark_conf(params["config"], params["spark_conf"])
        self._conn_id = self.conn_id  # the provider's hook reads the rendered connection here
        self.apply_submit_args(params["spark_submit"])
        self.env_vars = submit_env_vars(self.env_vars, self.conf)
        with tempfile.TemporaryDirectory(prefix="curindex-task-") as tmp:
            path = os.path.join(tmp, "summary.json")
            self.application_args = [*self.application_args, "--summary", path]
            try:
                super().execute(context)
            except AirflowException as e:
                error = job_error(read_summary(path))  # the curindex error the job stopped on
                if error is None:
                    raise
                with failing_fast():
                    raise error from e
            summary = read_summary(path)
        self.log.info("curindex summary: %s", one_line(summary))
        return summary

    def apply_submit_args(self, args: dict[str, Any]) -> None:
        """Set SparkSubmitOperator arguments by name (the provider keeps some under a leading
        underscore); AirflowFailException naming an argument it does not have."""
        for name, value in (args or {}).items():
            attr = name if name in self.template_fields else f"_{name}"
            if name not in SUBMIT_ARGS or not hasattr(self, attr):
                raise AirflowFailException(
                    f"spark_submit: {name!r} is not an argument of SparkSubmitOperator here "
                    f"(known: {', '.join(SUBMIT_ARGS)})")
            if name == "env_vars":  # over the task's own (PYTHONSAFEPATH)
                value = {**(self.env_vars or {}), **(value or {})}
            setattr(self, attr, value)


TIMEOUTS, LAYOUT, SUBMIT_DEFAULTS = _timeouts(), _layout(), _submit_defaults()

with DAG(
    dag_id=DAG_ID,
    description="Check, rebuild, validate, publish and prune a curindex index",
    doc_md=DOC_MD,
    schedule=os.environ.get("CURINDEX_SCHEDULE") or "@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=TIMEOUTS["dagrun"],
    on_failure_callback=on_failure,
    tags=["curindex", "index-build"],
    default_args={"owner": "curindex", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "config": Param(os.environ.get("CURINDEX_CONF") or "/etc/curindex/rebuild.toml",
                        type="string", minLength=1, description="curindex build config (TOML)"),
        "spark_conn_id": Param("spark_default", type="string", minLength=1,
                               description="Airflow Spark connection id"),
        "spark_conf": Param({}, type="object",
                            description="Spark settings over the config's [spark.conf]"),
        "spark_submit": Param({}, type="object",
                              description="SparkSubmitOperator arguments by name "
                                          "(num_executors, archives, deploy_mode, ...), over "
                                          "$CURINDEX_SPARK_SUBMIT's"),
        "keep_versions": Param(5, type="integer", minimum=0,
                               description="versions prune keeps"),
        "base": Param("", type="string",
                      description="build incrementally on this version ('current' or an id); "
                                  "empty: a full build"),
        "allow_scorer_change": Param(False, type="boolean",
                                     description="publish even when the current version "
                                                 "was built with another scorer"),
        "check_scorer": Param(True, type="boolean",
                              description="check loads the scorer and scores a pair"),
    },
    user_defined_macros={"curindex_version": curindex_version},
) as dag:

    @task(execution_timeout=TIMEOUTS["check"])
    def check(params: Any = None) -> dict[str, Any]:
        """Everything that can be known without Spark; every problem at once, no retry."""
        from curindex.ops.dag_tasks import check_config

        with failing_fast():
            return check_config(params["config"], scorer=params["check_scorer"])

    def stage(task_id: str, stage_name: str | None) -> BuildStage:
        args = ["--conf", "{{ params.config }}", "--version", "{{ curindex_version(dag_run) }}"]
        if stage_name is not None:
            args += ["--stage", stage_name]
        if stage_name in (None, "prepare"):  # later stages read the base prepare recorded
            args += ["--base", "{{ params.base }}"]
        return BuildStage(task_id=task_id, application=BUILD_JOB, application_args=args,
                          name=f"curindex-{stage_name or 'build'}",
                          execution_timeout=TIMEOUTS[task_id], **SUBMIT_DEFAULTS)

    spark_tasks = ([stage("build", None)] if LAYOUT == "build" else
                   [stage(task_id, name) for task_id, name in SPARK_STAGES])

    @task(outlets=[STORE_ASSET], execution_timeout=TIMEOUTS["publish"])
    def publish(params: Any = None, dag_run: Any = None, outlet_events: Any = None) -> str:
        """The quality gate and the scorer check, then the CURRENT pointer: a version under its
        thresholds (or with another scorer, unless allowed) fails the run (no retry) and stays
        unpublished."""
        from curindex.ops.dag_tasks import publish_version

        version = curindex_version(dag_run)
        with failing_fast():
            event = publish_version(params["config"], version,
                                    allow_scorer_change=params["allow_scorer_change"])
        outlet_events[STORE_ASSET].extra = event
        return version

    @task(execution_timeout=TIMEOUTS["prune"])
    def prune(params: Any = None) -> list[str]:
        """Delete old versions of the store."""
        from curindex.ops.dag_tasks import prune_versions

        with failing_fast():
            return prune_versions(params["config"], params["keep_versions"])

    chain(check(), *spark_tasks, publish(), prune())
