"""A Spark standalone cluster on 127.0.0.1 from the pip-installed pyspark, for tests.

The pip package has ``sbin/spark-daemon.sh`` but no ``start-master.sh``; the daemons are
started with it directly. PID, log and work folders live in a temporary folder, so stopping
touches exactly the processes this module started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: Path, n_workers: int, cores: int, env: dict) -> None:
        self.root, self.n_workers, self.cores = root, n_workers, cores
        self.port, self.ui_port = _free_port(), _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.env = {
            **env,
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_PID_DIR": str(root / "pids"),
            "SPARK_LOG_DIR": str(root / "logs"),
            "SPARK_WORKER_DIR": str(root / "work"),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
        }

    def _daemon(self, action: str, cls: str, instance: int, *args: str) -> None:
        cmd = [str(SPARK_HOME / "sbin" / "spark-daemon.sh"), action, cls, str(instance), *args]
        # No pipes: the daemon inherits the script's stdout, and a pipe would never close.
        subprocess.run(cmd, env=self.env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)

    def start(self) -> None:
        self._daemon("start", MASTER_CLASS, 1, "--host", "127.0.0.1", "--port", str(self.port),
                     "--webui-port", str(self.ui_port))
        for i in range(1, self.n_workers + 1):
            self._daemon("start", WORKER_CLASS, i, "--host", "127.0.0.1", "--cores",
                         str(self.cores), "--memory", "2g", "--webui-port", str(_free_port()),
                         self.url)
        self.wait_for_workers(self.n_workers)

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.load(r)

    def wait_for_workers(self, n: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                alive = [w for w in self.state()["workers"] if w["state"] == "ALIVE"]
                if len(alive) >= n:
                    return
            except (OSError, ValueError):  # not listening yet, or a half-written reply
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{n} workers did not register with {self.url} in {timeout} s")

    def worker_pid(self, instance: int) -> int:
        user = os.environ.get("USER") or subprocess.run(
            ["id", "-un"], capture_output=True, text=True).stdout.strip()
        pid_file = self.root / "pids" / f"spark-{user}-{WORKER_CLASS}-{instance}.pid"
        return int(pid_file.read_text().strip())

    def kill_worker(self, instance: int) -> list[int]:
        """SIGKILL a worker and everything it started (its executors and their Python
        workers), as a machine failure would. Returns the killed PIDs."""
        root = self.worker_pid(instance)
        pids = [root, *_descendants(root)]
        for pid in reversed(pids):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        for i in range(1, self.n_workers + 1):
            self._daemon("stop", WORKER_CLASS, i)
        self._daemon("stop", MASTER_CLASS, 1)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    children: dict[int, list[int]] = {}
    for line in out.stdout.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    result, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            result.append(c)
            todo.append(c)
    return result


@contextmanager
def standalone_cluster(root: Path, *, n_workers: int = 2, cores: int = 1, env: dict):
    cluster = Cluster(root, n_workers, cores, env)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
