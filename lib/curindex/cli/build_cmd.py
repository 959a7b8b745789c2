"""`curindex build`: submit the build job of the installed package to Spark.

    curindex build --conf FILE [--master URL] [--version ID] [--publish [--allow-scorer-change]]
        [--base V] [--skip-check] [-o json] [-- spark-submit options...]

The job is ``curindex/pipeline/job.py`` inside the installed package
(:func:`curindex.build_job_path`), run by the ``spark-submit`` of this Python environment
(beside this interpreter, else the pyspark package's own, else the first on ``PATH``). Options
after ``--`` go to spark-submit before the job (``--conf spark.executor.memory=8g``,
``--archives env.tar.gz#env``, ``--deploy-mode``, ...). The master is ``--master``, else one
given after ``--``, else the config's ``[spark] master``.

Spark's processes get ``PYSPARK_PYTHON`` and ``PYSPARK_DRIVER_PYTHON`` = this interpreter
(unless set), ``SPARK_LOCAL_IP=127.0.0.1`` for a local master (unless set), and
``PYTHONSAFEPATH=1``: run as a script, the job's own folder would otherwise come first on
``sys.path``, where ``curindex/pipeline/select.py`` hides the standard library's ``select``.

Spark's own logs are at WARN (``SPARK_SUBMIT_OPTS`` names the packaged log4j2 configuration,
``curindex.ops.submit``) unless the options after ``--`` name another.

The job writes its JSON summary to a temporary file (``--summary``); spark-submit's own output
goes to stderr, and stdout holds only the summary (``-o json``) or a short text of it. First the
config, its inputs, scorer and store are checked here (``curindex check``), so every problem
they have is listed at once before Spark starts (exit code 7); ``--skip-check`` leaves that to
the job (for inputs or a model only the cluster can read). A curindex error the job stops on is
printed once, with its exit code. With ``--publish`` the version is published here after the
job commits it, through the same ``publish_version`` as ``curindex publish``: a version under
its quality gate is built, kept and refused (exit code 5), and so is one built with another
scorer than the current version's, unless ``--allow-scorer-change``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from curindex.cli.exits import ERROR, FAILURE
from curindex.cli.options import add_output
from curindex.cli.output import emit_json, progress, safe, table
from curindex.errors import CurIndexError


def spark_submit_path() -> tuple[str, str | None]:
    """(the spark-submit of this environment, the SPARK_HOME it needs or None)."""
    beside = Path(sys.executable).parent / "spark-submit"
    if beside.is_file():
        return str(beside), None
    spec = importlib.util.find_spec("pyspark")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        home = Path(next(iter(spec.submodule_search_locations)))
        if (home / "bin" / "spark-submit").is_file():
            return str(home / "bin" / "spark-submit"), str(home)
    found = shutil.which("spark-submit")
    if found:
        return found, None
    raise CurIndexError("spark-submit not found beside this Python, in pyspark or on PATH: "
                        "install curindex with its Spark extra (pip install 'curindex[spark]')")


def submit_env(master: str | None, spark_home: str | None, *,
               quiet: bool = True) -> dict[str, str]:
    """The environment of spark-submit (see the module docstring); `quiet`: Spark's own logs
    at WARN (the packaged log4j2 configuration, ``curindex.ops.submit``)."""
    from curindex.ops.submit import quiet_spark_env

    env = quiet_spark_env(dict(os.environ)) if quiet else dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master is None or master.startswith("local"):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if spark_home is not None:
        env.setdefault("SPARK_HOME", spark_home)
    env["PYTHONSAFEPATH"] = "1"
    return env


def submit_command(args: argparse.Namespace, *, master: str | None, summary: Path,
                   spark_submit: str) -> list[str]:
    job = [
        "--conf", str(Path(args.conf).resolve()), "--summary", str(summary),
        *(["--version", args.version] if args.version else []),
        *(["--base", args.base] if args.base else []),
    ]
    return [spark_submit, *(["--master", master] if master else []), *args.spark_args,
            build_job(), *job]


def build_job() -> str:
    from curindex import build_job_path

    return build_job_path()


def run_job(cmd: list[str], env: dict[str, str]) -> tuple[int, str | None]:
    """Run spark-submit with everything it prints relayed to stderr but the job's own
    ``error: ...`` lines, which the caller reports once; (exit code, the last of them)."""
    error = None
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("error: "):
                error = line.removeprefix("error: ").strip()
            else:
                sys.stderr.write(line)
        return proc.wait(), error


def cmd_build(args: argparse.Namespace) -> int:
    from curindex.config import load_config

    if args.spark_args and "--" not in args.argv:
        raise ValueError(f"unexpected arguments {args.spark_args}: spark-submit options go "
                         "after --")
    from curindex.cli.check_cmd import run_check
    from curindex.ops.submit import job_error, names_log4j, read_summary

    if not args.skip_check:  # every problem of the config, inputs, scorer and store, at once
        run_check(args.conf, what="Spark starts")
    cfg = load_config(args.conf)  # a bad config fails here, before Spark starts
    master = args.master
    if master is None and "--master" not in args.spark_args:
        master = cfg.spark.master
    spark_submit, spark_home = spark_submit_path()
    with tempfile.TemporaryDirectory(prefix="curindex-build-") as tmp:
        summary_file = Path(tmp) / "summary.json"
        cmd = submit_command(args, master=master, summary=summary_file,
                             spark_submit=spark_submit)
        progress("submitting: " + " ".join(safe(c) for c in cmd))
        rc, error = run_job(cmd, submit_env(master, spark_home,
                                            quiet=not names_log4j(args.spark_args)))
        summary = read_summary(summary_file)
        if rc != 0:
            failed = job_error(summary)
            if failed is not None:
                raise failed  # printed once by the CLI, with its own exit code
            reason = f": {error}" if error else ""
            print(f"error: the build job failed (spark-submit exited with {rc}){reason}",
                  file=sys.stderr)
            # The job exits with 2 after printing a curindex error; anything else is Spark's.
            return ERROR if error else FAILURE
    if args.publish:
        _publish(summary, allow_scorer_change=args.allow_scorer_change)
    if args.output == "json":
        emit_json(summary)
    else:
        print_summary(summary)
    return 0


def _publish(summary: dict[str, Any], *, allow_scorer_change: bool) -> None:
    from curindex.errors import QualityGateError
    from curindex.ops.publish import publish_version
    from curindex.store import Store

    version = summary["version"]
    try:
        publish_version(Store.open(summary["store"]), version,
                        allow_scorer_change=allow_scorer_change)
    except QualityGateError as e:
        raise QualityGateError(f"version {version} was built into {summary['store']} but not "
                               f"published: {e}") from e
    summary["published"] = True
    progress(f"published version {version}")


def print_summary(s: dict[str, Any]) -> None:
    print(f"version {safe(s['version'])} in {safe(s['store'])}"
          + (" (published)" if s.get("published") else ""))
    if "items" not in s:
        return
    gate = s.get("quality_gate")
    print(f"  items {s['items']}, shards {s['shards']}, effective rank {s['effective_rank']}, "
          f"pairs scored {s['pairs_scored']} ({s['pairs_scored_this_run']} this run)")
    print("  quality gate: " + (gate if isinstance(gate, str) else "; ".join(map(safe, gate))))
    served = s.get("served")
    if served:
        print(f"  serves: {safe(served['search'])} at budget {served['budget']}"
              + (f" ({safe(served['reason'])})" if served.get("reason") else ""))
    if s.get("recall"):  # the served search beside the bi-encoder baseline, figure by figure
        from curindex.quality.figures import by_figure

        base = s.get("baseline_recall") or {}
        rows = [["figure", "served", "bi-encoder baseline"]]
        rows += [[f.label, f"{v:.4f}", f"{base[str(f)]:.4f}" if str(f) in base else "-"]
                 for f, v in by_figure(s["recall"])]
        print("\n".join("  " + line for line in table(rows, right=(1, 2))))
    if s.get("timings_s"):
        print("  seconds: " + "  ".join(f"{k} {v:.1f}" for k, v in s["timings_s"].items()))


def add_commands(sub: argparse._SubParsersAction) -> None:
    text = "build a version with Spark (the job inside this package, via spark-submit)"
    b = sub.add_parser("build", help=text, description=text,
                       usage="%(prog)s --conf FILE [--master URL] [--version ID] [--publish "
                             "[--allow-scorer-change]] [--base V] [--skip-check] [-o json] "
                             "[-- spark-submit options]")
    b.add_argument("--conf", required=True, metavar="FILE", help="the TOML build config")
    b.add_argument("--master", metavar="URL",
                   help="Spark master (local[4], spark://host:7077, yarn, k8s://...; default: "
                        "the config's [spark] master)")
    b.add_argument("--version", metavar="ID", help="version id (default: UTC time + a suffix)")
    b.add_argument("--publish", action="store_true",
                   help="publish the version once built (it must pass its quality gate)")
    b.add_argument("--base", metavar="VERSION",
                   help="build incrementally on this version (an id or 'current')")
    b.add_argument("--allow-scorer-change", action="store_true",
                   help="with --publish: publish even when the current version was built "
                        "with another scorer")
    b.add_argument("--skip-check", action="store_true",
                   help="skip the check of inputs, scorer and store before Spark starts "
                        "(when only the cluster can read them)")
    add_output(b)
    b.add_argument("spark_args", nargs="*", metavar="-- SPARK_SUBMIT_OPTIONS",
                   help="options after -- go to spark-submit before the job")
    b.set_defaults(func=cmd_build)
