"""The `curindex` command: every command's `-o json` output is one JSON document and nothing
else, the exit codes are the documented ones, ids are printed escaped, and eval measures every
method live as the build's own validation did.

One version is built with Spark (the toy scorer, plain CUR and adaptive search) into a store
this module copies whenever a test changes a store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curindex.cli import exits, main
from curindex.config import config_from_dict
from curindex.manifest import read_manifest
from curindex.pipeline import run_build
from curindex.search import Searcher
from curindex.store import Store
from support import make_texts, tiny_config, to_toml, write_corpus
from test_store import rewrite

pytestmark = pytest.mark.spark

EVIL_ID = "evil\n\x1b[31mred\tid\x00end"  # a newline, a terminal escape, a tab and a NUL
EVIL_TEXT = "river data zebra"
FAILED_GATE = {"validation": {"passed": False, "recall": {"10@200": 0.81},
                              "min_recall": {"10@200": 0.9}, "n_test": 25,
                              "failures": ["Top-10-Recall@200 = 0.8100 < 0.9000"]}}


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory) -> dict:
    """Version v1 (published) of a 301-item corpus, one of whose ids is EVIL_ID; plain CUR and
    adaptive search are built and validated, the served one chosen by the build."""
    root = tmp_path_factory.mktemp("cli")
    items = [*make_texts(300, seed=1, prefix="doc"), (EVIL_ID, EVIL_TEXT)]
    queries = make_texts(120, seed=2, prefix="q", min_words=2, max_words=5)
    corpus = write_corpus(root, items, queries)
    raw = tiny_config(corpus, anchors={"n_test": 20}, index={"methods": ["cur", "adaptive"]},
                      validate={"ks": [1, 10], "budgets": [20, 40], "rounds": [2]})
    cfg = config_from_dict(raw)
    run_build(spark, cfg, version="v1", publish=True)
    store = Store.open(cfg.store.uri)
    return {"uri": store.uri, "store": store, "items": dict(items), "cfg": raw}


@pytest.fixture
def store_copy(built, tmp_path) -> str:
    """A copy of the built store that a test may change."""
    return str(shutil.copytree(built["uri"], tmp_path / "store"))


def cli(capfd, *argv: str) -> tuple[int, str, str]:
    """`curindex ARGV` in this process: (exit code, stdout, stderr), at the file descriptors."""
    capfd.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse: --help, --version, usage errors
        code = e.code if isinstance(e.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def only_json(out: str) -> object:
    """stdout parsed as exactly one JSON document (json.loads fails on anything else)."""
    assert out.strip(), "nothing on stdout"
    return json.loads(out)


def reported_test_queries(store: Store, version: str) -> list[str]:
    """The build's reporting test queries (those after the tuning ones)."""
    manifest = store.read_manifest(version)
    table = pq.read_table(store.local_path(version, "anchors/queries.parquet")).to_pydict()
    test_q = [t for t, r in zip(table["text"], table["role"], strict=True) if r == "test"]
    return test_q[manifest["anchors"]["n_tune"]:]


def test_every_command_prints_one_json_document(built, capfd, tmp_path, store_copy):
    uri = built["uri"]
    qfile = tmp_path / "q.txt"
    qfile.write_text("river data\nmarket price\n")
    for argv in (["versions"], ["verify"], ["verify", "--version", "v1"],
                 ["search", "river data", "--k", "3"],
                 ["eval"], ["eval", "--queries", str(qfile), "--budgets", "40"],
                 ["eval", "--queries", str(qfile), "--all", "--budgets", "40"],
                 ["report", "--out", str(tmp_path / "report")]):
        code, out, err = cli(capfd, *argv, "--store", uri, "-o", "json")
        assert code == exits.OK, (argv, err)
        doc = only_json(out)
        assert isinstance(doc, dict) and (doc.get("version") == "v1" or argv == ["versions"])
    for argv in (["publish", "v1"], ["publish", "--version", "v1"], ["prune", "--keep", "5"],
                 ["prune", "--keep", "0", "--dry-run"]):
        code, out, err = cli(capfd, *argv, "--store", store_copy, "--output", "json")
        assert code == exits.OK, (argv, err)
        assert isinstance(only_json(out), dict)


def test_json_answers_agree_with_the_library(built, capfd):
    uri, store = built["uri"], built["store"]
    code, out, _ = cli(capfd, "versions", "--store", uri, "-o", "json")
    doc = only_json(out)
    listed = store.read_manifest("v1")
    assert doc["current"] == "v1"
    served = listed["search"]["default"]
    assert doc["versions"] == [{"version": "v1", "created_at": listed["created_at"],
                                "files": len(listed["files"]), "current": True,
                                "bytes": sum(f["size"] for f in listed["files"].values()),
                                "scorer": listed["scorer"],
                                "served": {"search": served["method"] if served["rounds"] == 1
                                           else f"adaptive ({served['rounds']} rounds)",
                                           "budget": served["budget"]},
                                "recall": listed["validation"]["recall"],
                                # the figure the build chose its search on (10@40 here)
                                "objective": listed["search"]["selection"]["objective"][0]}]
    code, out, _ = cli(capfd, "verify", "--store", uri, "-o", "json")
    assert only_json(out) == {"store": uri, "version": "v1", "ok": True,
                              "files": len(listed["files"]), "references": 0}
    want = Searcher.open(uri).search(["river data", "market"], k=4, budget=30)
    code, out, _ = cli(capfd, "search", "--store", uri, "-o", "json", "--k", "4",
                       "--budget", "30", "river data", "market")
    assert code == 0
    got = only_json(out)["results"]
    assert [[i["id"] for i in r["items"]] for r in got] == [r.ids for r in want]
    # float32 scores as JSON numbers: exactly the library's
    assert [[i["score"] for i in r["items"]] for r in got] == [r.scores.tolist() for r in want]
    assert [r["model_calls"] for r in got] == [30, 30]
    # the library refuses one bare string where a list of queries belongs, with a hint
    with pytest.raises(TypeError, match=r"search\(\[query\]\)"):
        Searcher.open(uri).search("river data")


def test_search_says_which_method_answered(built, capfd):
    uri = built["uri"]
    served = read_manifest(built["store"], "v1").search.default
    code, out, err = cli(capfd, "search", "--store", uri, "-o", "json", "river data")
    doc = only_json(out)
    assert doc["served"]["method"] == served.method and doc["served"]["budget"] == served.budget
    (result,) = doc["results"]
    # no --budget: the version's served budget; no method: its served search
    assert result["model_calls"] == served.budget
    assert result["method"] == Searcher.open(uri).spec().describe()
    code, out, err = cli(capfd, "search", "--store", uri, "-o", "json", "--method", "adaptive",
                         "--rounds", "2", "--budget", "40", "river data")
    (result,) = only_json(out)["results"]
    assert (result["method"], result["model_calls"]) == ("adaptive (2 rounds)", 40)
    code, out, err = cli(capfd, "search", "--store", uri, "--seed", "anchors", "--rounds", "3",
                         "--budget", "40", "river data")
    assert code == 0 and "adaptive (3 rounds), 40 model calls)" in out
    # progress on stderr while the version and its scorer load
    assert re.search(r"loading version current of .* and its scorer \.\.\.\nloaded in "
                     r"\d+\.\d s", err)


def test_ids_and_texts_are_printed_escaped(built, capfd):
    """Every item returned (k = budget = the corpus), one of them with EVIL_ID."""
    uri, n = built["uri"], len(built["items"])
    code, out, err = cli(capfd, "search", "--store", uri, "--k", str(n), "--budget", str(n),
                         "river")
    assert code == 0, err
    assert not set(out) & {"\x1b", "\x00", "\t"}
    rows = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert len(rows) == n  # the newline in the id did not split its row
    (evil_row,) = [ln for ln in rows if "evil" in ln]
    assert repr(EVIL_ID) in evil_row.split(maxsplit=2)[2]
    code, out, err = cli(capfd, "search", "--store", uri, "--k", str(n), "--budget", str(n),
                         "-o", "json", "river")
    assert not set(out) & {"\x1b", "\x00", "\t"}  # JSON escapes them
    ids = [i["id"] for i in only_json(out)["results"][0]["items"]]
    assert EVIL_ID in ids and sorted(ids) == sorted(built["items"])


def test_exit_codes(built, capfd, tmp_path, store_copy, monkeypatch):
    uri = built["uri"]
    missing = str(tmp_path / "no-store")
    for argv in (["versions"], ["verify"], ["search", "x"], ["eval"], ["report"],
                 ["publish", "v1"], ["rollback"], ["prune", "--keep", "1"]):
        code, out, err = cli(capfd, *argv, "--store", missing, "-o", "json")
        assert (code, out) == (exits.NOT_FOUND, ""), argv
        assert "does not exist" in err
    assert not Path(missing).exists()  # prune on a mistyped path created nothing
    for argv in (["verify", "nope"], ["search", "--version", "nope", "x"],
                 ["eval", "--version", "nope"], ["report", "nope"], ["publish", "nope"]):
        code, out, err = cli(capfd, *argv, "--store", uri, "-o", "json")
        assert (code, out) == (exits.NOT_FOUND, ""), argv
        assert "nope" in err
    # usage errors: argparse's own, and option values the version cannot take
    for argv in (["search", "--store", uri, "--nope", "x"], ["publish", "--store", uri],
                 ["verify", "--store", uri, "--version", "v1", "v2"],
                 ["search", "--store", uri, "--budget", "5", "x"],
                 ["search", "--store", uri], ["eval", "--store", uri, "--method", "cur"],
                 ["search", "--store", uri, "--method", "bi-rerank", "x"]):
        code, out, err = cli(capfd, *argv)
        assert (code, out) == (exits.USAGE, ""), argv
    monkeypatch.delenv("CURINDEX_STORE", raising=False)
    code, _, err = cli(capfd, "versions")
    assert code == exits.USAGE and "--store" in err
    # a corrupt shard: verify, and search (which verifies on open), name the file
    store = Store.open(store_copy)
    shard = next(p for p in store.read_manifest("v1")["files"] if p.endswith(".faiss"))
    rewrite(store, "v1", shard, lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    for argv in (["verify"], ["search", "x"]):
        code, out, err = cli(capfd, *argv, "--store", store_copy, "-o", "json")
        assert (code, out) == (exits.INTEGRITY, ""), argv
        assert shard in err


def test_env_store_and_help(built, capfd, monkeypatch):
    monkeypatch.setenv("CURINDEX_STORE", built["uri"])
    code, out, _ = cli(capfd, "versions", "-o", "json")
    assert code == 0 and only_json(out)["current"] == "v1"
    code, out, _ = cli(capfd, "--help")
    assert code == 0
    for code_, text in exits.EXIT_CODES.items():
        assert f"{code_:>3}  {text}" in out
    code, out, _ = cli(capfd, "search", "--help")
    assert code == 0 and "exit codes:" in out and "CURINDEX_STORE" in out


def test_publish_gate_prune_dry_run_and_a_lost_race(built, capfd, store_copy, monkeypatch):
    store = Store.open(store_copy)
    for v in ("v2", "v3"):
        store.begin_version(v)
        store.commit_version(v, {}, [store.write_bytes(v, "G.npy", v.encode())])
    store.begin_version("weak")
    store.commit_version("weak", FAILED_GATE, [store.write_bytes("weak", "G.npy", b"w")])
    code, out, err = cli(capfd, "publish", "weak", "--store", store_copy, "-o", "json")
    assert (code, out) == (exits.GATE, "") and "below its recall thresholds" in err
    assert store.current() == "v1"
    code, out, _ = cli(capfd, "publish", "--version", "v2", "--store", store_copy, "-o", "json")
    assert only_json(out) == {"store": store.uri, "version": "v2", "previous": "v1"}
    before = sorted(p.relative_to(store_copy) for p in Path(store_copy).rglob("*"))
    code, out, _ = cli(capfd, "prune", "--keep", "0", "--dry-run", "--store", store_copy,
                       "-o", "json")
    doc = only_json(out)
    assert doc["dry_run"] is True and doc["versions"] == ["v3", "weak"]
    assert sorted(p.relative_to(store_copy) for p in Path(store_copy).rglob("*")) == before
    # a lost race: another publisher moves CURRENT while `rollback` verifies its target
    from curindex.ops.publish import publish_version

    real_open = Store.open.__func__

    def open_with_a_rival(cls, uri, **kw):
        opened = real_open(cls, uri, **kw)

        def step(name: str) -> None:
            if name == "verified":
                publish_version(real_open(cls, uri), "v3")  # a second writer, its own Store

        opened.on_publish_step = step
        return opened

    monkeypatch.setattr(Store, "open", classmethod(open_with_a_rival))
    code, out, err = cli(capfd, "rollback", "--store", store_copy, "-o", "json")
    monkeypatch.undo()
    assert (code, out) == (exits.CONFLICT, "") and "lost a race" in err
    assert Store.open(store_copy).current() == "v3"


def test_eval_recorded_table_is_the_manifest(built, capfd):
    uri = built["uri"]
    manifest = read_manifest(built["store"], "v1")
    code, out, _ = cli(capfd, "eval", "--store", uri, "-o", "json")
    doc = only_json(out)
    assert doc["source"] == "validation" and doc["n_test"] == manifest.validation.n_test
    assert [(m["name"], m["rounds"], m["recall"], m["served"]) for m in doc["methods"]] == [
        (m.method, m.rounds, m.recall, m.served) for m in manifest.search.methods]
    assert {m["name"] for m in doc["methods"]} == {"cur", "adaptive"}
    assert doc["selection"]["reason"] == manifest.search.selection.reason
    code, out, _ = cli(capfd, "eval", "--store", uri)
    assert code == 0 and "(* the served search)" in out
    cur = next(m for m in manifest.search.methods if m.method == "cur")
    row = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["10@40"])
    assert f"{cur.recall['10@40']:.4f}" in row


def test_eval_live_measures_every_method_as_the_build_did(built, capfd, tmp_path):
    """Searching the build's reporting test queries live reproduces the figures its
    distributed validation recorded, for every method at its recorded parameters."""
    uri, store = built["uri"], built["store"]
    manifest = read_manifest(store, "v1")
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"text": q}) + "\n"
                             for q in reported_test_queries(store, "v1")))
    code, out, err = cli(capfd, "eval", "--store", uri, "--queries", str(qfile), "--all",
                         "--k", "1,10", "--budgets", "20,40", "-o", "json")
    assert code == 0, err
    got = {m["method"]: m["recall"] for m in only_json(out)["methods"]}
    from curindex.search.methods import SearchSpec

    want = {SearchSpec(m.method, m.rounds, m.seed_size).describe(): m.recall
            for m in manifest.search.methods}
    assert got.keys() == want.keys() and len(got) == 2
    for method, recall in want.items():
        assert got[method] == pytest.approx(recall, abs=1e-9), method
    assert "scored" in err and "at budget 40" in err  # progress on stderr
    code, out, _ = cli(capfd, "eval", "--store", uri, "--queries", str(qfile), "--method",
                       "adaptive", "--rounds", "2", "--budgets", "40")
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if ln.strip()[:1].isdigit()}
    assert "adaptive (2 rounds)" in out
    assert rows == {k: f"{want['adaptive (2 rounds)'][f'{k}@40']:.4f}" for k in ("1", "10")}


def test_many_queries_show_progress(built, capfd, tmp_path):
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(t for _, t in make_texts(150, seed=9, prefix="x")))
    code, out, err = cli(capfd, "search", "--store", built["uri"], "--queries", str(qfile),
                         "--k", "2", "-o", "json")
    assert code == 0 and len(only_json(out)["results"]) == 150
    assert "searched 100/150 queries" in err and "searched 150/150 queries" in err


def test_python_m_curindex(built, tmp_path):
    """A real process: `python -m curindex`, its version, and stdout holding JSON alone."""
    import curindex

    env = {**os.environ, "CURINDEX_STORE": built["uri"]}
    done = subprocess.run([sys.executable, "-m", "curindex", "--version"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"curindex {curindex.__version__}\n")
    done = subprocess.run([sys.executable, "-m", "curindex", "search", "-o", "json", "river"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "v1" and "loaded in" in done.stderr
    done = subprocess.run([sys.executable, "-m", "curindex", "verify", "--version", "nope"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert (done.returncode, done.stdout) == (exits.NOT_FOUND, "")


def test_build_refuses_a_bad_config_before_spark_starts(built, capfd, tmp_path):
    code, out, err = cli(capfd, "build", "--conf", str(tmp_path / "none.toml"), "-o", "json")
    assert (code, out) == (exits.BAD_INPUT, "") and "config file not found" in err
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml({**built["cfg"], "anchors": {"n_items": 99, "n_queries": 10}}))
    code, out, err = cli(capfd, "build", "--conf", str(bad), "-o", "json")
    assert (code, out) == (exits.BAD_INPUT, "") and "[anchors] n_items" in err
    assert "submitting" not in err  # Spark was never started
    code, out, err = cli(capfd, "build", "--conf", str(bad), "stray")
    assert code == exits.USAGE and "after --" in err


def test_exit_code_table():
    from curindex.errors import (
        ConfigError,
        ConflictError,
        FactorizeError,
        InputError,
        IntegrityError,
        QualityGateError,
        ScorerError,
        StoreError,
        StoreNotFoundError,
        VersionNotFoundError,
    )

    table = {StoreNotFoundError: 3, VersionNotFoundError: 3, IntegrityError: 4,
             QualityGateError: 5, ConflictError: 6, ConfigError: 7, InputError: 7,
             ScorerError: 7, FactorizeError: 8, StoreError: 8, ValueError: 2, KeyError: 1}
    assert {cls: exits.exit_code(cls("x")) for cls in table} == table
    assert len(set(exits.EXIT_CODES)) == len(exits.EXIT_CODES) == 11


def test_build_submits_the_packaged_job_with_this_python(monkeypatch, tmp_path):
    import argparse

    import curindex
    from curindex.cli.build_cmd import submit_command, submit_env

    for var in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_LOCAL_IP", "SPARK_HOME",
                "SPARK_SUBMIT_OPTS"):
        monkeypatch.delenv(var, raising=False)
    env = submit_env("local[2]", "/opt/pyspark")
    assert (env["PYSPARK_PYTHON"], env["PYSPARK_DRIVER_PYTHON"]) == (sys.executable,) * 2
    assert (env["SPARK_LOCAL_IP"], env["SPARK_HOME"], env["PYTHONSAFEPATH"]) == (
        "127.0.0.1", "/opt/pyspark", "1")
    # Spark's own logs at WARN: the log4j2 configuration inside the package, for the driver
    log4j = Path(curindex.__file__).parent / "log4j2.properties"
    assert env["SPARK_SUBMIT_OPTS"] == f"-Dlog4j2.configurationFile=file:{log4j}"
    assert "rootLogger.level = warn" in log4j.read_text()
    mine = "-Xss4m -Dlog4j2.configurationFile=file:/etc/spark/mine.properties"
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", mine)  # a configuration of one's own stays
    assert submit_env("local[2]", None)["SPARK_SUBMIT_OPTS"] == mine
    monkeypatch.delenv("SPARK_SUBMIT_OPTS")
    monkeypatch.setenv("PYSPARK_PYTHON", "/envs/shared/bin/python")
    env = submit_env("yarn", None)
    assert env["PYSPARK_PYTHON"] == "/envs/shared/bin/python"  # what is set stays
    assert "SPARK_LOCAL_IP" not in env and "SPARK_HOME" not in env
    args = argparse.Namespace(conf="c.toml", version="v7", base="current",
                              spark_args=["--archives", "env.tgz#env"])
    monkeypatch.chdir(tmp_path)
    cmd = submit_command(args, master="yarn", summary=tmp_path / "s.json",
                         spark_submit="/bin/spark-submit")
    assert cmd == ["/bin/spark-submit", "--master", "yarn", "--archives", "env.tgz#env",
                   curindex.build_job_path(), "--conf", str(tmp_path / "c.toml"),
                   "--summary", str(tmp_path / "s.json"), "--version", "v7",
                   "--base", "current"]

