"""What `curindex build` and the Airflow DAG share when they run the build job with
spark-submit: Spark's log settings, and how a failed job says which curindex error it was.

Logs: ``log4j2.properties`` ships in the package (Spark's own logs at WARN, its submission
client at INFO); ``SPARK_SUBMIT_OPTS`` points the driver JVM at it in client mode, unless the
caller already names a log4j2 configuration (there, or with ``--driver-java-options``).

Errors: the job writes ``{"error": {"class": ..., "message": ...}}`` to its ``--summary`` file
when it stops on a curindex error; `job_error` turns that back into the exception, so that the
caller reports it once, with its own exit code (or, in the DAG, without a retry when it is
deterministic).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from curindex import errors
from curindex.errors import CurIndexError

LOG4J_PROPERTY = "log4j2.configurationFile"

# Failures that a retry of the same run cannot mend: the config, the inputs, the scorer, the
# quality gate (or a scorer change the run does not allow), the factorization of the same
# matrix, a build lock another live build holds.
DETERMINISTIC = (errors.ConfigError, errors.InputError, errors.ScorerError,
                 errors.QualityGateError, errors.FactorizeError, errors.ConflictError)


def log4j2_path() -> str:
    """The packaged log4j2 configuration file (Spark's logs at WARN)."""
    return str(Path(str(files("curindex").joinpath("log4j2.properties"))))


def quiet_spark_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with ``SPARK_SUBMIT_OPTS`` naming the packaged log4j2 configuration, unless a
    log4j2 configuration is named there already."""
    opts = env.get("SPARK_SUBMIT_OPTS", "")
    if LOG4J_PROPERTY in opts:
        return env
    flag = f"-D{LOG4J_PROPERTY}=file:{log4j2_path()}"
    return {**env, "SPARK_SUBMIT_OPTS": f"{opts} {flag}".strip()}


def names_log4j(spark_args: list[str]) -> bool:
    """Whether spark-submit options name their own log4j2 configuration."""
    return any(LOG4J_PROPERTY in a for a in spark_args)


def read_summary(path: str | Path) -> dict[str, Any]:
    """The job's JSON summary file, {} when it wrote none (it died before)."""
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def job_error(summary: dict[str, Any]) -> CurIndexError | None:
    """The curindex error a failed job recorded in its summary, as that exception; None when
    it recorded none (Spark or the JVM failed, or the job was killed)."""
    failed = summary.get("error")
    if not isinstance(failed, dict):
        return None
    cls = getattr(errors, str(failed.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, CurIndexError)):
        return None
    return cls(str(failed.get("message", "")))


def one_line(summary: dict[str, Any]) -> str:
    """A summary as one JSON line (a log line, not hundreds)."""
    return json.dumps(summary, separators=(",", ":"), sort_keys=True, default=str)
