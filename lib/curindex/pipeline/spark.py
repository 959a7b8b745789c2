"""SparkSession construction for the entry points (jobs and the CLI); library functions
receive a session and never create one."""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from curindex.config import SparkConfig

# Defaults every curindex session gets unless the config or spark-submit says otherwise.
DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}


def session_from_config(cfg: SparkConfig) -> SparkSession:
    """A SparkSession for `cfg`: under spark-submit the master is spark-submit's (its
    `--master`, `local[*]` when not given); a job started with plain `python` gets the config's
    `[spark] master`. Config `conf` entries override the defaults above."""
    builder = SparkSession.builder.appName(cfg.app_name)
    # spark-submit starts the JVM first and hands Python its gateway port; its master is a JVM
    # system property that a SparkConf made before the session cannot see, so test for the
    # gateway instead.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(cfg.master)
    for key, value in {**DEFAULT_CONF, **cfg.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark
