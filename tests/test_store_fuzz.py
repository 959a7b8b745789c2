"""Property: whatever a store's writable files hold, `curindex` never crashes on it.

Hypothesis mutates a copy of a published store (two versions of one tiny build): its
manifests, CURRENT, build records and stage states, and its Arrow id maps (with the
manifest's hashes recomputed, so that the readers behind `verify` see the mutation). Each
case runs `verify`, `search`, `versions` or `prune` in a long-lived worker process
(tests/store_fuzz_worker.py). The process must never die by a signal, every command must
exit with a documented code with an ``error:`` line (never a traceback), and nothing outside
the store may be deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curindex.cli.exits import EXIT_CODES, FAILURE

pytestmark = pytest.mark.spark

TESTS = Path(__file__).resolve().parent
CASE_TIMEOUT_S = 60
# Exit codes a command may end with here: success, or a curindex error's documented code.
ALLOWED = set(EXIT_CODES) - {FAILURE, 130, 141}
SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


class Worker:
    """The worker process, started again after it died (a failing case is re-run while
    Hypothesis shrinks it)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(TESTS / "store_fuzz_worker.py")], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env={**os.environ, "CURINDEX_ALLOWED_SCORERS": "", "OMP_NUM_THREADS": "1"})
        return self.proc

    def run(self, ops: list[list[str]]) -> list[dict]:
        proc = self.start()
        proc.stdin.write(json.dumps({"ops": ops}) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], CASE_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""
        if not line:
            if ready:
                proc.wait(timeout=30)
            else:
                proc.kill()
            code = proc.wait()
            self.proc = None
            pytest.fail(f"the worker {'died with exit status ' + str(code) if ready else 'hung'}"
                        f" running {ops}" + (f" (signal {-code})" if code < 0 else ""))
        return json.loads(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pristine(tiny_published, tmp_path_factory):
    """A copy of the tiny published store with a second version, "old" (a copy of "v",
    committed earlier), and a folder outside it that no command may touch."""
    root = tmp_path_factory.mktemp("fuzz")
    store = root / "store"
    shutil.copytree(tiny_published.store.uri, store, symlinks=True)
    shutil.copytree(store / "versions" / "v", store / "versions" / "old")
    doc = json.loads((store / "versions" / "old" / "manifest.json").read_text())
    doc.update(version="old", created_at="2000-01-01T00:00:00.000000+00:00")
    (store / "versions" / "old" / "manifest.json").write_text(json.dumps(doc))
    outside = root / "outside"
    (outside / "old").mkdir(parents=True)
    (outside / "old" / "keep.txt").write_text("not the store's")
    return store, outside


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


@pytest.fixture
def work(pristine, tmp_path_factory):
    """A copy of the store per test, which each case puts back as it found it."""
    store, outside = pristine
    dest = tmp_path_factory.mktemp("case") / "store"
    _reset(store, dest)
    return store, dest, outside


def _reset(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True)


def _restore(src: Path, dest: Path, *rels: str) -> None:
    """Put back what a case changed (a whole copy costs more than the commands it runs)."""
    for rel in rels:
        path = dest / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        if (src / rel).is_dir():
            shutil.copytree(src / rel, path, symlinks=True)
        elif (src / rel).exists():
            shutil.copy2(src / rel, path)


def _rehash(store: Path, version: str, rel: str) -> None:
    path = store / "versions" / version / "manifest.json"
    doc = json.loads(path.read_text())
    data = (store / "versions" / version / rel).read_bytes()
    doc["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path.write_text(json.dumps(doc))


def _check(results: list[dict], outside: Path) -> None:
    for r in results:
        assert r["code"] in ALLOWED, (r["argv"], r["code"], r["err"])
        if r["code"] != 0:
            assert "error: " in r["err"] and "Traceback" not in r["err"], r
    assert (outside / "old" / "keep.txt").read_text() == "not the store's"


def _ops(store: Path, *names: str) -> list[list[str]]:
    s = str(store)
    table = {
        "verify": ["verify", "--store", s],
        "search": ["search", "--store", s, "--k", "3", "--budget", "40", "river data"],
        "versions": ["versions", "--store", s],
        # a configured work_dir beside the store, not the folder outside it
        "prune": ["prune", "--store", s, "--keep", "1", "--work-dir", f"file:{s}/../work"],
        "prune-builds": ["prune", "--store", s, "--keep", "2", "--work-dir",
                         f"file:{s}/../work"],
    }
    return [table[n] for n in names]


# -- what a mutation writes ---------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats() | st.text(max_size=12)
           | st.sampled_from(["v", "old", "../v", "current", "\x1b[2J", "a" * 300, "1@2"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _nodes(doc, path=()):
    """Every (path, value) of a JSON document, parents first."""
    yield path, doc
    if isinstance(doc, dict):
        for k in sorted(doc):
            yield from _nodes(doc[k], (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _nodes(v, (*path, i))


def _set(doc, path, value, *, delete=False):
    if not path:
        return value
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def json_mutation(draw, doc):
    """`doc` with one node replaced (by any JSON value, or a near-miss of its own) or
    deleted, or its bytes cut, flipped or nested past any parser's depth."""
    how = draw(st.sampled_from(["node", "node", "node", "bytes"]))
    if how == "bytes":
        data = json.dumps(doc).encode()
        cut = draw(st.sampled_from(["truncate", "flip", "nest", "empty"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if cut == "truncate":
            return data[:at]
        if cut == "flip":
            return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
        if cut == "nest":
            return b"[" * 100_000 + data + b"]" * 100_000
        return b""
    nodes = list(_nodes(doc))
    path, value = nodes[draw(st.integers(0, len(nodes) - 1))]
    if isinstance(value, int | float) and not isinstance(value, bool) and draw(st.booleans()):
        new = draw(st.sampled_from([-1, 0, 2**31, 2**63 - 1, 2**64, 1e308, -0.5, value + 1]))
    elif isinstance(value, str) and draw(st.booleans()):
        new = draw(st.sampled_from(["", value * 2, value + "x", "/etc/passwd", "\x00"]))
    else:
        new = draw(JSON)
    return json.dumps(_set(doc, path, new, delete=draw(st.booleans()))).encode()


# -- the properties -----------------------------------------------------------------------------

@settings(SETTINGS, max_examples=400)
@given(data=st.data())
def test_manifests(work, worker, data):
    src, store, outside = work
    version = data.draw(st.sampled_from(["v", "old"]))
    rel = f"versions/{version}/manifest.json"
    (store / rel).write_bytes(data.draw(json_mutation(json.loads((src / rel).read_text()))))
    _check(worker.run(_ops(store, "verify", "search", "versions")), outside)
    _restore(src, store, rel)


@settings(SETTINGS, max_examples=150)
@given(data=st.data())
def test_current(work, worker, data):
    src, store, outside = work
    path = store / "CURRENT"
    kind = data.draw(st.sampled_from(["json", "json", "link", "folder"]))
    if kind == "json":
        path.write_bytes(data.draw(json_mutation(json.loads(path.read_text()))))
    elif kind == "link":
        path.unlink()
        path.symlink_to(data.draw(st.sampled_from(["/dev/zero", "/etc/hostname",
                                                   str(store / "versions" / "old")])))
    else:
        path.unlink()
        path.mkdir()
    results = worker.run(_ops(store, "versions", "search", "prune"))
    _check(results, outside)
    if results[-1]["code"] == 0:  # it pruned version old
        _reset(src, store)
    else:
        _restore(src, store, "CURRENT")


@settings(SETTINGS, max_examples=150)
@given(data=st.data())
def test_build_records_and_states(work, worker, data):
    src, store, outside = work
    version = data.draw(st.sampled_from(["old", "old", "v", "gone"]))
    builds = store / "_builds" / version
    builds.mkdir(parents=True, exist_ok=True)
    # Work folders a record may name: outside the store (never to be deleted), the store
    # itself, its own _work/, the configured work_dir, and what is no path at all.
    up = os.path.relpath(outside, store / "_work")
    work_uri = data.draw(st.sampled_from([
        str(outside / "old"), f"file://{outside}/old", f"file:{outside}/../outside/old",
        f"{store}/_work/{up}/old", str(store), f"{store}/_work/{version}",
        f"file:{store.parent}/work/{version}", "/", "\x00", "s3a://bucket/w/old",
    ]) | st.text(max_size=20))
    record = {"version": version, "work_uri": work_uri, "recorded_at": "x", "host": "h",
              "pid": 1}
    (builds / "build.json").write_bytes(data.draw(json_mutation(record)))
    (builds / "score.json").write_bytes(data.draw(json_mutation({"config_digest": "x"})))
    (store / "_work" / version).mkdir(parents=True, exist_ok=True)
    if data.draw(st.booleans()):  # a link where a build state folder should be
        shutil.rmtree(builds)
        builds.symlink_to(outside / "old")
    old = time.time() - 10 * 86400
    for p in (builds, store / "_work" / version):
        os.utime(p, (old, old), follow_symlinks=False)
    _check(worker.run(_ops(store, "prune-builds")), outside)  # both versions are kept
    _restore(src, store, "_builds", "_work")


@st.composite
def id_map_bytes(draw, table: pa.Table, data: bytes):
    """An id map with a byte flipped or cut, or one whose string offsets, types or length
    were forged (the file still a valid Arrow IPC file)."""
    how = draw(st.sampled_from(["flip", "flip", "truncate", "offsets", "types", "rows"]))
    if how in ("flip", "truncate"):
        at = draw(st.integers(0, len(data) - 1))
        if how == "truncate":
            return data[:at]
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    n = table.num_rows
    if how == "offsets":
        name = draw(st.sampled_from(["item_id", "text"]))
        offsets = np.array(draw(st.lists(st.integers(-2**31, 2**31 - 1), min_size=n + 1,
                                         max_size=n + 1)), dtype=np.int32)
        offsets[0], offsets[-1] = 0, 8  # what an IPC writer checks
        forged = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.tobytes()),
                                                        pa.py_buffer(b"x" * 8)])
        table = table.set_column(table.column_names.index(name), name, forged)
    elif how == "types":
        name = draw(st.sampled_from(table.column_names))
        table = table.set_column(table.column_names.index(name), name,
                                 pa.array(np.arange(n) * draw(st.integers(-3, 3))))
    else:
        table = table.slice(0, draw(st.integers(0, max(0, n - 1))))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


@settings(SETTINGS, max_examples=300)
@given(data=st.data())
def test_id_maps(work, worker, data):
    src, store, outside = work
    rel = data.draw(st.sampled_from(["shards/ids-00000.arrow", "shards/ids-00001.arrow"]))
    path = store / "versions" / "v" / rel
    original = (src / "versions" / "v" / rel).read_bytes()
    table = pa.ipc.open_file(pa.BufferReader(original)).read_all()
    path.write_bytes(data.draw(id_map_bytes(table, original)))
    _rehash(store, "v", rel)
    _check(worker.run(_ops(store, "verify", "search")), outside)
    _restore(src, store, f"versions/v/{rel}", "versions/v/manifest.json")
