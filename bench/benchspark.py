"""The local SparkSession every benchmark runs in (loopback, UTC, Arrow, no UI)."""

from __future__ import annotations


def local_session(app_name: str, master: str = "local[2]", **conf: str):
    """A SparkSession named `app_name` (`local[2]` unless `master` says otherwise); `conf` adds
    Spark settings."""
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
