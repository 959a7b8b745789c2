"""The local SparkSession every benchmark runs in (loopback, UTC, Arrow, no UI)."""

from __future__ import annotations


def local_session(app_name: str, **conf: str):
    """A `local[2]` SparkSession named `app_name`; `conf` adds Spark settings."""
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master("local[2]").appName(app_name)
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
