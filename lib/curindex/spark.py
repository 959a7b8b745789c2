"""SparkSession construction for the entry points (jobs and the CLI); library functions
receive a session and never create one."""

from __future__ import annotations

from pyspark import SparkConf
from pyspark.sql import SparkSession

from curindex.config import SparkConfig

# Defaults every curindex session gets unless the config or spark-submit says otherwise.
DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}


def session_from_config(cfg: SparkConfig) -> SparkSession:
    """A SparkSession for `cfg`: the master comes from spark-submit when it set one, else from
    the config; config `conf` entries override the defaults above."""
    builder = SparkSession.builder.appName(cfg.app_name)
    if not SparkConf().contains("spark.master"):
        builder = builder.master(cfg.master)
    for key, value in {**DEFAULT_CONF, **cfg.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark
