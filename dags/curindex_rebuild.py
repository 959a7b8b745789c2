"""Scheduled rebuilds of a curindex index: the build's Spark stages, the quality gate, publish
and prune, as one Airflow DAG. The DAG's doc_md below says what it does and how to deploy it.

Only the standard library, the Airflow SDK and the Spark provider are imported at parse time;
curindex is imported inside the tasks, on the worker.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, Param, chain, task
from airflow.sdk.exceptions import AirflowFailException

DAG_ID = "curindex_rebuild"
# The build job: jobs/build_index.py of the checkout this file sits in, unless set.
BUILD_JOB = os.environ.get("CURINDEX_BUILD_JOB") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs", "build_index.py"
)
# The store this DAG publishes to, as an Airflow asset. An asset's URI is fixed when the DAG is
# parsed, so it comes from the environment, never from the config file.
STORE_ASSET = Asset(name="curindex-store", uri=os.environ.get("CURINDEX_STORE_URI") or
                    "curindex-store")
SPARK_STAGES = (  # (task id, --stage of jobs/build_index.py)
    ("check_inputs", "prepare"),
    ("score", "score"),
    ("factorize", "factorize"),
    ("write_shards", "write_shards"),
    ("validate", "validate"),
    ("commit", "commit"),
)

DOC_MD = """
# curindex_rebuild

Rebuilds a curindex index from its config file, checks it against its quality gate, publishes
it to the index store and prunes old versions.

## Tasks

1. `check_inputs`: reads and checks the items and queries (present, non-empty, unique ids,
   non-empty texts) and chooses the anchors (`jobs/build_index.py --stage prepare`).
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

Tasks 1 to 6 are `SparkSubmitOperator`s running `jobs/build_index.py --conf CONFIG --version
VERSION --stage STAGE`; `publish` and `prune` are Python tasks that do not start Spark.

**Version id.** A run builds the version `rebuild-<logical date in UTC, YYYYMMDDTHHMMSSZ>`
(a run without a logical date: `rebuild-<run id, made safe>-<8 hex digits>`). A retried task,
or the same run cleared and run again, works on the same version and never on another run's:
a stage overwrites only its own output, a version is invisible until `commit` writes its
manifest and unpublished until `publish`, and once it is committed its Spark tasks submit
nothing and its publish changes nothing, so a re-run leaves the same files. Re-running a run
after its config file changed fails (versions are immutable); re-running an old run makes its
version current again.

## Params

- `config`: the curindex build config (TOML) on the worker; default `$CURINDEX_CONF`, else
  `/etc/curindex/rebuild.toml`. Its `[store] uri` is where the version is written and published.
- `spark_conn_id` (default `spark_default`): the Airflow Spark connection; its host is the
  master (`local[4]`, `spark://host:7077`, `yarn`, `k8s://...`).
- `spark_conf` (default `{}`): Spark settings, over the config file's `[spark.conf]` table.
- `keep_versions` (default 5): how many versions `prune` keeps.
- `base` (default empty: a full build): a version id, or `current`, to build incrementally on
  (its anchors and G are kept, only new and changed items are scored, untouched shards are
  shared with it); it must have been built with `[index] keep_scores = true`.

## Deploy

- Airflow workers: curindex with its Spark extra (`pip install -e '.[spark,airflow]'` from a
  checkout), whose `spark-submit` must be on `PATH`, Java 17, and read access to the config
  file and the inputs. Spark executors need the same Python environment (`spark.pyspark.python`
  in `[spark.conf]`, or `PYSPARK_PYTHON`) and the model directory.
- This file goes into the DAGs folder; it needs only Airflow and the Spark provider
  (`apache-airflow-providers-apache-spark>=5,<6`) to be parsed.
- Environment of the DAG processor and the workers: `CURINDEX_CONF` (the default config path),
  `CURINDEX_STORE_URI` (the asset's URI: set it to the config's `[store] uri`),
  `CURINDEX_BUILD_JOB` (the path of `jobs/build_index.py`, when this file is not in a curindex
  checkout), `CURINDEX_SCHEDULE` (default `@daily`).
- A Spark connection: `airflow connections add spark_default --conn-type spark --conn-host
  yarn`, or `AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[4]"}'`.
- One rebuild by hand: `airflow dags trigger curindex_rebuild --conf '{"config":
  "/etc/curindex/products.toml", "keep_versions": 3}'`.
- Downstream DAGs (a serving reload) can run on `schedule=[Asset.ref(name="curindex-store")]`;
  each event's extra holds `store`, `version` and `recall`.
"""


def curindex_version(dag_run: Any) -> str:
    """The version id of a DAG run (a template macro: ``{{ curindex_version(dag_run) }}``)."""
    from curindex.publish_task import version_for_run

    return version_for_run(dag_run.logical_date, dag_run.run_id)


class BuildStage(SparkSubmitOperator):
    """One stage of jobs/build_index.py. The Spark connection and conf are resolved when the task
    runs: the `spark_conn_id` param, and the config file's [spark.conf] with `spark_conf` over
    it. A version already committed from the same config needs no stage: nothing is submitted."""

    def execute(self, context: Any) -> None:
        from curindex.publish_task import is_committed, spark_conf

        params, version = context["params"], curindex_version(context["dag_run"])
        if is_committed(params["config"], version):
            self.log.info("version %s is already committed from this config: nothing to do",
                          version)
            return
        self._conn_id = params["spark_conn_id"]
        self.conf = spark_conf(params["config"], params["spark_conf"])
        super().execute(context)


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
        )
        for task_id, stage in SPARK_STAGES
    ]

    @task(outlets=[STORE_ASSET])
    def publish(params: Any = None, dag_run: Any = None, outlet_events: Any = None) -> str:
        """The quality gate, then the CURRENT pointer: a version under its thresholds fails the
        run (no retry) and stays unpublished."""
        from curindex.errors import QualityGateError
        from curindex.publish_task import publish_version

        version = curindex_version(dag_run)
        try:
            event = publish_version(params["config"], version)
        except QualityGateError as e:
            raise AirflowFailException(f"quality gate failed: {e}") from e
        outlet_events[STORE_ASSET].extra = event
        return version

    @task
    def prune(params: Any = None) -> list[str]:
        """Delete old versions of the store."""
        from curindex.publish_task import prune_versions

        return prune_versions(params["config"], params["keep_versions"])

    chain(*stages, publish(), prune())
