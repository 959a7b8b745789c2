"""Small file codecs of the pipeline (Parquet and .npy bytes) and the work folder's removal."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def remove_work(spark: SparkSession, work: str) -> None:
    """Delete the intermediate scores through Hadoop's FileSystem (any URI Spark writes)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(work)
    path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(path, True)
