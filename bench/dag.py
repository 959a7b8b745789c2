"""What a build costs through the Airflow DAG against `curindex build`, side by side.

On one generated corpus and one config (the toy scorer, Spark `local[2]`), alternately:

- `build_s`: ``curindex build --conf C --publish`` as a user runs it (a new process: the
  check, spark-submit of the whole build, publish), wall time;
- `dag_s`: ``dag.test()`` of ``dags/curindex_rebuild.py`` (the default layout: check, one
  spark-submit of the whole build, publish, prune) on the same config, timed inside a new
  process around the call (the process's imports and the DAG file's parse excluded, as in a
  running Airflow); `dag_process_s` is that process's wall time, start to end;
- with ``--stages`` also `dag_stages_s`: the same DAG with one spark-submit per stage
  (``CURINDEX_SPARK_TASKS=stages``).

Each run builds into a new store. Prints one JSON document: every run's seconds, their
medians, `ratio` (median `dag_s` / median `build_s`), the load average around the runs, and
what was built. Needs Java and the venv's spark-submit; about 2 minutes a round on 2 cores.

    .venv/bin/python bench/dag.py [--rounds 2] [--stages]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("river mountain cloud data index search model query vector matrix forest ocean "
         "signal engine planet orbit carbon climate energy solar wind storm rain city market "
         "price bank music piano guitar song film actor stage novel poem language").split()
SPARK_CONF = {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false",
              "spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2"}

DAG_RUN = """
import json, sys, time
from datetime import datetime
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["curindex_rebuild"]
for t in dag.tasks:
    t.retries = 0
t0 = time.perf_counter()
run = dag.test(logical_date=datetime.fromisoformat(sys.argv[2]),
               run_conf={"config": sys.argv[3]})
seconds = time.perf_counter() - t0
print(json.dumps({"state": str(run.state), "seconds": seconds}))
"""


def texts(n: int, seed: int, lo: int, hi: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi + 1)))) for _ in range(n)]


def write_inputs(root: Path, n_items: int, n_queries: int) -> tuple[Path, Path]:
    items, queries = root / "items.jsonl", root / "queries.jsonl"
    items.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                             for i, t in enumerate(texts(n_items, 1, 4, 12))))
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n"
                               for i, t in enumerate(texts(n_queries, 2, 2, 5))))
    return items, queries


def write_config(path: Path, items: Path, queries: Path, store: Path) -> Path:
    lines = [f'[items]\npath = "{items}"', f'[queries]\npath = "{queries}"',
             "[anchors]\nn_queries = 40\nn_items = 12\nn_test = 10\nseed = 3",
             '[scorer]\nkind = "toy"\noptions = { dim = "8" }',
             '[index]\nnum_shards = 3\nmethods = ["cur"]',
             "[validate]\nks = [10]\nbudgets = [20]",
             f'[store]\nuri = "{store}"',
             "[spark]\nblock_items = 32\nscore_partitions = 4",
             "[spark.conf]\n" + "\n".join(f'"{k}" = "{v}"' for k, v in SPARK_CONF.items())]
    path.write_text("\n\n".join(lines) + "\n")
    return path


def environment(home: Path) -> dict[str, str]:
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"),
                                           *filter(None, [os.environ.get("PYTHONPATH")])]),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
            "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark",
                                                      "host": "local[2]"})}


def run_build(conf: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "curindex", "build", "--conf", str(conf),
                           "--master", "local[2]", "--publish", "-o", "json"],
                          env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"curindex build failed:\n{done.stderr[-3000:]}")
    return seconds


def run_dag(conf: Path, env: dict[str, str], when: datetime) -> tuple[float, float]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DAG_RUN, str(ROOT / "dags"), when.isoformat(),
                           str(conf)], env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    result = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
    if result.get("state") not in ("success", "DagRunState.SUCCESS"):
        raise SystemExit(f"the DAG run failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return result["seconds"], wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--stages", action="store_true", help="also time the per-stage layout")
    args = p.parse_args()
    runs: dict[str, list[float]] = {"build_s": [], "dag_s": [], "dag_process_s": []}
    if args.stages:
        runs["dag_stages_s"] = []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="curindex-bench-dag-") as tmp:
        root = Path(tmp)
        items, queries = write_inputs(root, args.items, 120)
        env = environment(root / "airflow")
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                       capture_output=True, timeout=600)
        when = datetime(2026, 1, 1, tzinfo=UTC)
        for r in range(args.rounds):
            conf = write_config(root / f"build-{r}.toml", items, queries, root / f"store-b{r}")
            runs["build_s"].append(run_build(conf, env))
            conf = write_config(root / f"dag-{r}.toml", items, queries, root / f"store-d{r}")
            when += timedelta(days=1)
            seconds, wall = run_dag(conf, env, when)
            runs["dag_s"].append(seconds)
            runs["dag_process_s"].append(wall)
            if args.stages:
                conf = write_config(root / f"st-{r}.toml", items, queries, root / f"store-s{r}")
                when += timedelta(days=1)
                seconds, _ = run_dag(conf, {**env, "CURINDEX_SPARK_TASKS": "stages"}, when)
                runs["dag_stages_s"].append(seconds)
            load.append(os.getloadavg()[0])
    medians = {k: round(statistics.median(v), 2) for k, v in runs.items()}
    print(json.dumps({
        "bench": "dag", "items": args.items, "queries": 120, "scorer": "toy",
        "master": "local[2]", "rounds": args.rounds,
        "runs": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "median": medians,
        "ratio": round(medians["dag_s"] / medians["build_s"], 3),
        **({"ratio_stages": round(medians["dag_stages_s"] / medians["build_s"], 3)}
           if args.stages else {}),
        "load_average_1min": [round(x, 2) for x in load],
    }, indent=2))


if __name__ == "__main__":
    main()
