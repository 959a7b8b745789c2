"""curindex as a package: a light `import curindex`, the build job found inside the package,
models named by Hugging Face id and read offline from a local cache, and (marked e2e, `make
e2e`) the wheel built from this checkout installed into a new virtualenv outside it, building
and searching an index with `curindex build` / `curindex search`, and the DAG file copied alone
into an empty DAGs folder running from that installation."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from curindex.config import ScorerConfig, load_config
from curindex.errors import ConfigError, ScorerError
from curindex.scoring.base import build_scorer, fingerprint_for, model_dir
from support import make_texts, tiny_config, to_toml, write_corpus, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "faiss", "pyspark", "transformers")
MODEL_ID = "test-org/tiny-ce"


def test_import_curindex_is_light_and_searcher_comes_on_demand():
    code = (
        "import json, sys\n"
        "import curindex\n"
        f"light = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "from curindex import Searcher, SearchResult\n"
        "import curindex.search.searcher as s\n"
        "print(json.dumps({'light': light, 'same': Searcher is s.Searcher and "
        "SearchResult is s.SearchResult, 'dir': 'Searcher' in dir(curindex)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"light": [], "same": True, "dir": True}
    import curindex

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        curindex.Nope  # noqa: B018


def test_the_build_job_is_found_inside_the_package():
    import curindex

    path = Path(curindex.build_job_path())
    assert path == Path(curindex.__file__).parent / "pipeline" / "job.py" and path.is_file()
    assert (Path(curindex.__file__).parent / "py.typed").is_file()


# -- models by Hugging Face id, from a throwaway cache laid out as the hub lays it out --


def save_tiny_bert(d: Path, seed: int) -> Path:
    """A random 2-layer BertForSequenceClassification (seed `seed`) with the MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from curindex.scoring.models import default_minilm_path

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).eval().save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_minilm_path() / f, d / f)
    return d


def cache_model(cache: Path, model_id: str, folder: Path, *, ref: str = "main") -> str:
    """Put `folder`'s files into a hub cache as the hub does (blobs by sha256, a snapshot of
    symlinks named by a commit hash, refs/<ref> naming it); returns the commit hash."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    files = sorted(p for p in folder.iterdir() if p.is_file())
    commit = hashlib.sha1(b"".join(hashlib.sha256(p.read_bytes()).digest()
                                   for p in files)).hexdigest()
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for p in files:
        blob = repo / "blobs" / hashlib.sha256(p.read_bytes()).hexdigest()
        shutil.copy(p, blob)
        (snapshot / p.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict:
    """A hub cache holding MODEL_ID at two commits (main is the second) and the same first
    weights as a plain local folder."""
    root = tmp_path_factory.mktemp("hub")
    first = save_tiny_bert(root / "first", seed=0)
    second = save_tiny_bert(root / "second", seed=1)
    cache = root / "cache"
    old = cache_model(cache, MODEL_ID, first)
    new = cache_model(cache, MODEL_ID, second)
    return {"cache": cache, "first": first, "old": old, "new": new}


def ce(path: str, **kw) -> ScorerConfig:
    return ScorerConfig(kind="cross-encoder", path=path, max_query_tokens=16,
                        max_item_tokens=32, **kw)


def test_a_model_id_is_read_from_the_local_cache_at_its_revision(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    queries, items = ["open a file", "sort numbers"], ["open(file) opens it", "sorted(x)",
                                                        "weather"]
    assert model_dir(ce(MODEL_ID)).name == hub["new"]  # "main" resolved to its commit
    pinned = ce(MODEL_ID, revision=hub["old"])
    assert model_dir(pinned) == hub["cache"] / f"models--{MODEL_ID.replace('/', '--')}" / \
        "snapshots" / hub["old"]
    # The pinned snapshot scores exactly as the same weights in a plain folder do...
    np.testing.assert_array_equal(build_scorer(pinned).score_block(queries, items),
                                  build_scorer(ce(str(hub["first"]))).score_block(queries, items))
    # ...and the revision's commit enters the fingerprint: main moved on, so it differs.
    assert len({fingerprint_for(ce(MODEL_ID)), fingerprint_for(pinned),
                fingerprint_for(ce(str(hub["first"])))}) == 3
    assert fingerprint_for(pinned) == fingerprint_for(ce(MODEL_ID, revision=hub["old"]))
    # HF_HOME is honoured as the hub honours it (its hub/ folder)
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(hub["cache"].parent / "home"))
    shutil.copytree(hub["cache"], hub["cache"].parent / "home" / "hub", symlinks=True,
                    dirs_exist_ok=True)
    assert model_dir(ce(MODEL_ID)).name == hub["new"]


def test_a_model_missing_from_the_cache_says_how_to_fetch_it(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    with pytest.raises(ScorerError) as err:
        fingerprint_for(ce("cross-encoder/ms-marco-MiniLM-L-6-v2"))
    message = str(err.value)
    assert "hf download cross-encoder/ms-marco-MiniLM-L-6-v2 --revision main" in message
    assert str(hub["cache"]) in message and "[scorer] path to a local model folder" in message
    with pytest.raises(ScorerError, match="revision 'v9'"):
        fingerprint_for(ce(MODEL_ID, revision="v9"))


def test_config_paths_keep_model_ids_and_record_the_revision(hub, tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    for f in hub["first"].iterdir():
        shutil.copy(f, tmp_path / "models" / "mine" / f.name)

    def load(scorer: dict) -> ScorerConfig:
        cfg = tiny_config({"items_path": "i.jsonl", "queries_path": "q.jsonl", "root": tmp_path})
        cfg["scorer"] = {"kind": "cross-encoder", **scorer}
        (tmp_path / "c.toml").write_text(to_toml(cfg))
        return load_config(tmp_path / "c.toml").scorer

    # a relative folder that exists beside the config is that folder...
    assert load({"path": "models/mine"}).path == str(tmp_path / "models" / "mine")
    # ..."org/name" with nothing there is a model id, kept as written, with its revision
    got = load({"path": MODEL_ID, "revision": hub["old"]})
    assert (got.path, got.revision) == (MODEL_ID, hub["old"])
    assert dataclasses.asdict(load({"path": MODEL_ID}))["revision"] == "main"  # recorded
    # ...and other relative paths are folders beside the config, as before
    assert load({"path": "models/../none"}).path == str(tmp_path / "none")
    with pytest.raises(ConfigError, match=r"\[scorer\] revision"):
        load({"path": MODEL_ID, "revision": "../x"})


ST_MODULE = """
import numpy as np
from sentence_transformers import CrossEncoder
from curindex.scoring.models import resolve_model_path

class STCrossEncoder:
    fingerprint = ""

    def __init__(self, cfg):
        folder, _ = resolve_model_path(cfg.path, revision=cfg.revision)
        self.model = CrossEncoder(str(folder), max_length=cfg.max_item_tokens)

    def score_block(self, queries, items):
        pairs = [(q, it) for q in queries for it in items]
        s = self.model.predict(pairs, batch_size=64, convert_to_numpy=True)
        return np.asarray(s, dtype=np.float32).reshape(len(queries), len(items))

def factory(cfg):
    return STCrossEncoder(cfg)
"""


def test_a_sentence_transformers_cross_encoder_as_a_callable_scorer(hub, monkeypatch, tmp_path):
    """The wrapper curindex.scoring.models documents, on the cached model: the same ranking as
    the built-in cross-encoder of the same weights (sentence-transformers may add a sigmoid)."""
    (tmp_path / "st_wrapper.py").write_text(ST_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    queries, items = ["open a file", "sort numbers"], ["open(file) opens it", "sorted(x)",
                                                        "weather today", "a list of files"]
    wrapped = build_scorer(ScorerConfig(kind="callable", target="st_wrapper:factory",
                                        path=MODEL_ID, revision=hub["old"]))
    got = wrapped.score_block(queries, items)
    want = build_scorer(ce(MODEL_ID, revision=hub["old"])).score_block(queries, items)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.allclose(got, want, atol=1e-5) or np.allclose(got, 1 / (1 + np.exp(-want)),
                                                            atol=1e-5)
    assert wrapped.fingerprint.startswith("sha256:")
    # the callable's fingerprint tells revisions apart (its model files are its own business)
    other = ScorerConfig(kind="callable", target="st_wrapper:factory", path=MODEL_ID,
                         revision=hub["new"])
    assert fingerprint_for(other) != wrapped.fingerprint


# -- the wheel, installed outside the checkout (make e2e) --


def run(cmd: list[str], *, env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel built from this checkout's files, installed into a new virtualenv outside the
    checkout. The heavy dependencies come from this interpreter's site-packages, named in a
    .pth file of the new one (a .pth in that folder, such as an editable install of this
    checkout, is not read: it is no site folder of the new environment)."""
    root = tmp_path_factory.mktemp("e2e")
    src = root / "src"  # this checkout's files, without build leftovers or a .venv
    src.mkdir()
    for rel in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / rel, src / rel)
    shutil.copytree(ROOT / "lib", src / "lib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    # Built with this environment's setuptools when it has one (no download); else pip fetches
    # the build backend pyproject.toml names from PyPI, as for any source install.
    isolation = [] if importlib.util.find_spec("setuptools") is None else \
        ["--no-build-isolation"]
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
         "-w", str(root / "dist"), str(src)], env=env, cwd=root, timeout=300)
    (wheel,) = (root / "dist").glob("curindex-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env, cwd=root,
        timeout=120)
    python = venv / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               env=env, cwd=root, timeout=60).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    (Path(site) / "curindex-e2e-deps.pth").write_text(deps + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)], env=env, cwd=root, timeout=300)
    env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "HF_HUB_OFFLINE": "1"}
    return {"root": root, "wheel": wheel, "venv": venv, "python": python, "site": site,
            "deps": deps, "env": env}


@pytest.mark.e2e
def test_the_wheel_holds_the_package(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for name in ("curindex/py.typed", "curindex/log4j2.properties", "curindex/pipeline/job.py",
                 "curindex/cli/__init__.py", "curindex/__main__.py", "curindex/scoring/models.py"):
        assert name in names
    assert not [n for n in names if n.startswith("curindex/cli_")]
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "curindex = curindex.cli:main" in zipfile.ZipFile(installed["wheel"]).read(
        entry).decode()
    code = ("import curindex, json; "
            "print(json.dumps([curindex.__file__, curindex.build_job_path()]))")
    done = run([str(installed["python"]), "-c", code], env=installed["env"],
               cwd=installed["root"], timeout=60)
    module, job = json.loads(done.stdout)
    assert module.startswith(installed["site"]) and job.startswith(installed["site"])
    done = run([str(installed["venv"] / "bin" / "curindex"), "--version"], env=installed["env"],
               cwd=installed["root"], timeout=60)
    assert done.stdout == "curindex 0.1.0\n"


@pytest.mark.e2e
def test_installed_curindex_builds_and_searches(installed):
    """`curindex build` on a copy of the demo config pointed at a tiny generated corpus, then
    `curindex search -o json`; the answer equals this checkout's Searcher on the same store."""
    root, env = installed["root"], installed["env"]
    items = make_texts(300, seed=1, prefix="doc")
    queries = make_texts(120, seed=2, prefix="q", min_words=2, max_words=5)
    write_jsonl(root / "data" / "items.jsonl",
                [{"_id": i, "title": "", "text": t} for i, t in items])
    write_jsonl(root / "data" / "queries.jsonl", [{"_id": i, "text": t} for i, t in queries])
    cfg = tomllib.loads((ROOT / "conf" / "demo.toml").read_text())
    cfg["items"]["path"], cfg["queries"]["path"] = "data/items.jsonl", "data/queries.jsonl"
    cfg["anchors"].update(n_queries=40, n_items=12, n_test=20)
    cfg["validate"].update(budgets=[25, 50, 100], objective="10@100")
    cfg["store"]["uri"] = "store"  # relative: beside the config
    cfg["spark"]["conf"].update({"spark.ui.enabled": "false", "spark.driver.memory": "1g"})
    (root / "demo-copy.toml").write_text(to_toml(cfg))
    curindex = str(installed["venv"] / "bin" / "curindex")
    done = run([curindex, "build", "--conf", "demo-copy.toml", "--version", "e2e", "--publish",
                "-o", "json", "--", "--conf", "spark.sql.shuffle.partitions=4"],
               env=env, cwd=root, timeout=900)
    summary = json.loads(done.stdout)
    assert summary["version"] == "e2e" and summary["published"] is True
    assert summary["items"] == 300 and summary["quality_gate"] == "passed"
    assert installed["site"] in done.stderr  # spark-submit ran the installed package's job
    assert "spark.sql.shuffle.partitions=4" in done.stderr
    done = run([curindex, "search", "--store", str(root / "store"), "-o", "json", "--k", "5",
                "river data", "market price"], env=env, cwd=root, timeout=300)
    got = json.loads(done.stdout)
    from curindex.search import Searcher

    want = Searcher.open(str(root / "store")).search(["river data", "market price"], k=5)
    assert got["version"] == "e2e"
    assert [[i["id"] for i in r["items"]] for r in got["results"]] == [r.ids for r in want]
    assert [r["method"] for r in got["results"]] == [r.method for r in want]


@pytest.mark.e2e
def test_the_dag_file_alone_runs_from_the_installed_package(installed):
    """Deployed as the README says: curindex installed (the wheel), the DAG file copied alone
    into an empty DAGs folder; dag.test() with Spark local mode and SQLite."""
    root, python = installed["root"] / "airflow", str(installed["python"])
    dags = root / "dags"
    dags.mkdir(parents=True)
    shutil.copy(ROOT / "dags" / "curindex_rebuild.py", dags / "curindex_rebuild.py")
    items = make_texts(300, seed=1, prefix="doc")
    queries = make_texts(120, seed=2, prefix="q", min_words=2, max_words=5)
    corpus = write_corpus(root, items, queries)
    cfg = tiny_config(corpus, store=root / "store", validate={"ks": [10], "budgets": [20]},
                      spark={"conf": {"spark.driver.host": "127.0.0.1",
                                      "spark.ui.enabled": "false",
                                      "spark.sql.shuffle.partitions": "4",
                                      "spark.driver.extraJavaOptions":
                                          "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}})
    (root / "rebuild.toml").write_text(to_toml(cfg))
    pyspark = Path(installed["deps"]) / "pyspark"
    env = {**installed["env"],
           "AIRFLOW_HOME": str(root / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
           # what `pip install 'curindex[spark]'` puts on PATH: pyspark's spark-submit
           "PATH": f"{pyspark / 'bin'}{os.pathsep}{installed['env']['PATH']}",
           "SPARK_HOME": str(pyspark), "PYSPARK_PYTHON": python, "SPARK_LOCAL_IP": "127.0.0.1",
           "CURINDEX_CONF": str(root / "rebuild.toml")}
    run([python, "-m", "airflow", "db", "migrate"], env=env, cwd=root, timeout=300)
    script = (
        "import json\n"
        "from datetime import datetime, UTC\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(dags)!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "dag = bag.dags['curindex_rebuild']\n"
        "for t in dag.tasks: t.retries = 0\n"
        "run = dag.test(logical_date=datetime(2026, 1, 2, 3, tzinfo=UTC))\n"
        "print(json.dumps({'state': str(run.state), 'job': dag.task_dict['build'].application,"
        " 'tasks': {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}))\n"
    )
    done = run([python, "-c", script], env=env, cwd=root, timeout=900)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["state"] == "success", done.stdout[-5000:]
    # the default layout: check, one spark-submit of the whole build, publish, prune
    assert set(got["tasks"].values()) == {"success"} and sorted(got["tasks"]) == [
        "build", "check", "prune", "publish"]
    assert got["job"].startswith(installed["site"])  # the installed package's job
    from curindex.store import Store

    version = "rebuild-" + datetime(2026, 1, 2, 3, tzinfo=UTC).strftime("%Y%m%dT%H%M%SZ")
    store = Store.open(str(root / "store"))
    assert store.current() == version
    store.verify(version)
