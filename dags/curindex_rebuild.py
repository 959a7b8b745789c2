"""Scheduled rebuilds of a curindex index: the build's Spark stages, the quality gate, publish
and prune, as one Airflow DAG. The DAG's doc_md below says what it does and how to deploy it.

Deploy from the installed package: ``pip install 'curindex[spark,airflow]'`` on the DAG
processor and the workers, then copy this file alone into the DAGs folder. At parse time only
the standard library, the Airflow SDK, the Spark provider and ``curindex`` itself (which is
light: no Spark, torch or faiss) are imported; the tasks import the rest on the worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, Param, chain, task
from airflow.sdk.exceptions import AirflowFailException

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
SPARK_STAGES = (  # (task id, --stage of the build job)
    ("check_inputs", "prepare"),
    ("score", "score"),
    ("factorize", "factorize"),
    ("write_shards", "write_shards"),
    ("validate", "validate"),
    ("commit", "commit"),
)
# How long each task may run before Airflow fails it (and retries it). Scoring is the long
# stage: k_q + n_test queries against every item. CURINDEX_TASK_TIMEOUTS (JSON, task id ->
# minutes) overrides any of them where the DAG is parsed.
TASK_TIMEOUTS = {
    "check_inputs": timedelta(hours=1),
    "score": timedelta(hours=12),
    "factorize": timedelta(hours=1),
    "write_shards": timedelta(hours=3),
    "validate": timedelta(hours=3),
    "commit": timedelta(hours=1),
    "publish": timedelta(hours=1),  # verifies the sha256 of every file
    "prune": timedelta(minutes=30),
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


DOC_MD = """
# curindex_rebuild

Rebuilds a curindex index from its config file, checks it against its quality gate, publishes
it to the index store and prunes old versions.

## Tasks

1. `check_inputs`: reads and checks the items and queries (present, non-empty, unique ids,
   non-empty texts) and chooses the anchors (the build job's `--stage prepare`).
2. `score`: scores the anchor and held-out test queries against every item.
3. `factorize`: pseudo-inverts the anchor intersection matrix into `G.npy`.
4. `write_shards`: writes the faiss shards.
5. `validate`: measures Top-k-Recall@budget on the held-out queries (the gate's figures).
6. `commit`: writes the manifest; the version is complete, not yet published.
7. `publish`: the quality gate. A version whose recall meets `[validate] min_recall` becomes
   the store's current version and the asset `curindex-store` is updated; otherwise the task
   fails with the figures in its log, without retries, and nothing is published (the version
   stays in the store for inspection).
8. `prune`: deletes the versions beyond the `keep_versions` newest (never the current or the
   previous one).

Tasks 1 to 6 are `SparkSubmitOperator`s running the build job of the installed curindex
package (`curindex/pipeline/job.py --conf CONFIG --version VERSION --stage STAGE`); `publish`
and `prune` are Python tasks that do not start Spark.

**Version id.** A run builds the version `rebuild-<logical date in UTC, YYYYMMDDTHHMMSSZ>`
(a run without a logical date: `rebuild-<run id, made safe>-<8 hex digits>`). A retried task,
or the same run cleared and run again, works on the same version and never on another run's:
a stage overwrites only its own output, a version is invisible until `commit` writes its
manifest and unpublished until `publish`, and once it is committed its Spark tasks submit
nothing and its publish changes nothing, so a re-run leaves the same files. Re-running a run
after its config file changed fails (versions are immutable); re-running an old run makes its
version current again.

**Timeouts.** Each task has an `execution_timeout`, after which Airflow fails it (and retries
it, as for any failure): `check_inputs` 1 h, `score` 12 h, `factorize` 1 h, `write_shards`
3 h, `validate` 3 h, `commit` 1 h, `publish` 1 h (it hashes every file), `prune` 30 min.
Set `CURINDEX_TASK_TIMEOUTS` (JSON, task id to minutes, e.g. `{"score": 2880}`) where the DAG
is parsed to change any of them.

## Params

- `config`: the curindex build config (TOML) on the worker; default `$CURINDEX_CONF`, else
  `/etc/curindex/rebuild.toml`. Its `[store] uri` is where the version is written and published.
- `spark_conn_id` (default `spark_default`): the Airflow Spark connection of this run; its
  host is the master (`local[4]`, `spark://host:7077`, `yarn`, `k8s://...`).
- `spark_conf` (default `{}`): Spark settings, over the config file's `[spark.conf]` table.
- `keep_versions` (default 5): how many versions `prune` keeps.
- `base` (default empty: a full build): a version id, or `current`, to build incrementally on
  (its anchors and G are kept, only new and changed items are scored, untouched shards are
  shared with it); it must have been built with `[index] keep_scores = true`.

## Deploy

- The DAG processor and the workers: `pip install 'curindex[spark,airflow]'` (first
  `pip install torch==2.13.0`, the CPU build), which puts `spark-submit` on the environment's
  `PATH`; Java 17 on the workers, and read access to the config file and the inputs. Without
  curindex the file fails to parse with an ImportError saying so. Spark executors need the
  same Python environment (`spark.pyspark.python` in `[spark.conf]`, or `PYSPARK_PYTHON`) and
  the model.
- This file, alone, goes into the DAGs folder; the build job comes from the installed package.
- Environment, all optional: `CURINDEX_CONF` (the default config path), `CURINDEX_STORE_URI`
  (the asset's URI: set it to the config's `[store] uri`), `CURINDEX_SCHEDULE` (default
  `@daily`), `CURINDEX_TASK_TIMEOUTS`, `CURINDEX_BUILD_JOB` (another path of the build job).
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


class BuildStage(SparkSubmitOperator):
    """One stage of the build job, submitted on the Spark connection the run names.

    ``conn_id`` is a templated field (``{{ params.spark_conn_id }}``) handed to the provider's
    hook when the task runs. The Spark settings are resolved then too: the config file's
    ``[spark.conf]`` with the ``spark_conf`` param over it; they are the only settings this
    operator passes to spark-submit, with the application, its arguments, the name and the
    environment. A version already committed from the same config needs no stage: nothing is
    submitted.
    """

    template_fields: Sequence[str] = (*SparkSubmitOperator.template_fields, "conn_id")

    def __init__(self, *, conn_id: str = "{{ params.spark_conn_id }}", **kwargs: Any) -> None:
        # Run as a script, the job's folder would come first on sys.path, where the package's
        # pipeline/select.py hides the standard library's `select`.
        kwargs["env_vars"] = {"PYTHONSAFEPATH": "1", **(kwargs.get("env_vars") or {})}
        super().__init__(conn_id=conn_id, **kwargs)
        self.conn_id = conn_id

    def execute(self, context: Any) -> None:
        from curindex.ops.dag_tasks import is_committed, spark_conf

        params, version = context["params"], curindex_version(context["dag_run"])
        if is_committed(params["config"], version):
            self.log.info("version %s is already committed from this config: nothing to do",
                          version)
            return
        self.conf = spark_conf(params["config"], params["spark_conf"])
        super().execute(context)

    def _get_hook(self) -> SparkSubmitHook:
        return SparkSubmitHook(
            conn_id=self.conn_id, conf=self.conf, name=self.name,
            application_args=self.application_args, env_vars=self.env_vars,
            files=self.files, py_files=self.py_files, jars=self.jars,
            driver_class_path=self.driver_class_path, packages=self.packages,
            exclude_packages=self.exclude_packages, keytab=self.keytab,
            principal=self.principal, proxy_user=self.proxy_user,
            properties_file=self.properties_file)


TIMEOUTS = _timeouts()

with DAG(
    dag_id=DAG_ID,
    description="Rebuild, validate, publish and prune a curindex index",
    doc_md=DOC_MD,
    schedule=os.environ.get("CURINDEX_SCHEDULE") or "@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["curindex", "index-build"],
    default_args={"owner": "curindex", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "config": Param(os.environ.get("CURINDEX_CONF") or "/etc/curindex/rebuild.toml",
                        type="string", minLength=1, description="curindex build config (TOML)"),
        "spark_conn_id": Param("spark_default", type="string", minLength=1,
                               description="Airflow Spark connection id"),
        "spark_conf": Param({}, type="object",
                            description="Spark settings over the config's [spark.conf]"),
        "keep_versions": Param(5, type="integer", minimum=0,
                               description="versions prune keeps"),
        "base": Param("", type="string",
                      description="build incrementally on this version ('current' or an id); "
                                  "empty: a full build"),
    },
    user_defined_macros={"curindex_version": curindex_version},
) as dag:
    stages = [
        BuildStage(
            task_id=task_id,
            application=BUILD_JOB,
            application_args=["--conf", "{{ params.config }}",
                              "--version", "{{ curindex_version(dag_run) }}", "--stage", stage,
                              # later stages read the base from what prepare recorded
                              *(["--base", "{{ params.base }}"] if stage == "prepare" else [])],
            name=f"curindex-{stage}",
            execution_timeout=TIMEOUTS[task_id],
        )
        for task_id, stage in SPARK_STAGES
    ]

    @task(outlets=[STORE_ASSET], execution_timeout=TIMEOUTS["publish"])
    def publish(params: Any = None, dag_run: Any = None, outlet_events: Any = None) -> str:
        """The quality gate, then the CURRENT pointer: a version under its thresholds fails the
        run (no retry) and stays unpublished."""
        from curindex.errors import QualityGateError
        from curindex.ops.dag_tasks import publish_version

        version = curindex_version(dag_run)
        try:
            event = publish_version(params["config"], version)
        except QualityGateError as e:
            raise AirflowFailException(f"quality gate failed: {e}") from e
        outlet_events[STORE_ASSET].extra = event
        return version

    @task(execution_timeout=TIMEOUTS["prune"])
    def prune(params: Any = None) -> list[str]:
        """Delete old versions of the store."""
        from curindex.ops.dag_tasks import prune_versions

        return prune_versions(params["config"], params["keep_versions"])

    chain(*stages, publish(), prune())
