"""`curindex check` and the check `build` and `plan` run first: every mistake of a config, its
inputs, scorer and store listed at once, each naming the file and the key, exit code 7, and
no Spark started. The input verdicts are the same as the build's Spark read of the same files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curindex.cli import exits
from curindex.config import InputConfig
from curindex.inputs.sources import inspect_source, resolve_source, source_problems
from support import make_texts, to_toml, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def write_parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def user(tmp_path: Path) -> dict:
    """What a new user has: 500 items as Parquet (doc_id, title, body), a 30-query JSON lines
    log (qid, text), and a config for them that builds."""
    items = make_texts(500, seed=1, prefix="doc")
    write_parquet(tmp_path / "items.parquet", {"doc_id": [i for i, _ in items],
                                               "title": ["" for _ in items],
                                               "body": [t for _, t in items]})
    write_jsonl(tmp_path / "log.jsonl", [{"qid": i, "text": t} for i, t in
                                         make_texts(30, seed=2, prefix="q", min_words=2)])
    good = {
        "items": {"path": "items.parquet", "id_column": "doc_id",
                  "text_columns": ["title", "body"]},
        "queries": {"path": "log.jsonl", "id_column": "qid"},
        "anchors": {"n_queries": 20, "n_items": 8, "n_test": 6},
        "scorer": {"kind": "toy", "options": {"dim": "8"}},
        "store": {"uri": "store"},
    }
    return {"root": tmp_path, "good": good}


def write_config(user: dict, name: str, **sections) -> Path:
    cfg = {k: dict(v) for k, v in user["good"].items()}
    for section, values in sections.items():
        cfg[section] = {**cfg[section], **values}
    path = user["root"] / f"{name}.toml"
    path.write_text(to_toml(cfg))
    return path


def run_cli(*argv: str) -> dict:
    """`curindex` in a fresh interpreter: exit code, stdout, stderr, and whether pyspark was
    imported (no Spark can start without it)."""
    code = ("import json, sys\nfrom curindex.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "sys.stdout.flush()\n"
            "print('\\n' + json.dumps({'rc': rc, 'pyspark': 'pyspark' in sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    *out, last = done.stdout.rstrip("\n").split("\n")
    return {**json.loads(last), "out": "\n".join(out).strip(), "err": done.stderr}


# The mistakes a new user made, one config each: (what is changed, the key the problem names,
# a fragment of the problem).
MISTAKES = {
    "id_column": ({"items": {"id_column": "id"}}, "[items] id_column",
                  "missing column 'id' (columns: doc_id, title, body)"),
    "text_columns": ({"items": {"text_columns": ["title", "text"]}}, "[items] text_columns",
                     "missing column 'text' (columns: doc_id, title, body)"),
    "small_log": ({"anchors": {"n_queries": 100, "n_test": 10}}, "[anchors] n_queries",
                  "30 queries, fewer than k_q + n_test = 100 + 10 = 110: set [anchors] "
                  "synthetic_queries = 80"),
    "scorer_path": ({"scorer": {"kind": "cross-encoder", "path": "missing-model", "options": {}}},
                    "[scorer] path", "model directory not found"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_mistake_is_found_without_spark(user, mistake):
    change, key, fragment = MISTAKES[mistake]
    conf = write_config(user, mistake, **change)
    got = run_cli("check", "--conf", str(conf))
    assert (got["rc"], got["pyspark"]) == (exits.BAD_INPUT, False)
    (line,) = [x for x in got["err"].splitlines() if x.startswith("error: ")]  # once
    assert line.startswith(f"error: {conf}: {key}: ") and fragment in line, line


def test_every_mistake_at_once_and_build_and_plan_stop_there(user):
    conf = write_config(user, "all", items={"id_column": "id", "text_columns": ["title", "text"]},
                        anchors={"n_queries": 100, "n_test": 10},
                        scorer={"kind": "cross-encoder", "path": "missing-model", "options": {}})
    got = run_cli("check", "--conf", str(conf), "-o", "json")
    assert (got["rc"], got["pyspark"]) == (exits.BAD_INPUT, False)
    doc = json.loads(got["out"])
    assert doc["ok"] is False and len(doc["problems"]) == 4
    for _, key, fragment in MISTAKES.values():
        assert sum(p.startswith(f"{conf}: {key}: ") and fragment in p
                   for p in doc["problems"]) == 1
    for command in ("build", "plan"):
        got = run_cli(command, "--conf", str(conf))
        assert (got["rc"], got["pyspark"], got["out"]) == (exits.BAD_INPUT, False, "")
        assert "submitting" not in got["err"]  # spark-submit never ran
        for _, key, _fragment in MISTAKES.values():  # each problem once
            assert got["err"].count(f"{conf}: {key}: ") == 1, (command, key)


def test_following_the_advice_passes(user):
    """The small log's own advice (synthetic_queries = 80) makes a config that checks clean,
    and so does the good config."""
    conf = write_config(user, "advised", anchors={"n_queries": 100, "n_test": 10,
                                                  "synthetic_queries": 80})
    got = run_cli("check", "--conf", str(conf))
    assert got["rc"] == exits.OK, got["err"]
    assert "ok: items: 500 rows" in got["out"] and "ok: queries: 30 rows" in got["out"]
    assert "ok: scorer: toy loaded, one pair scored" in got["out"]


def test_a_store_that_cannot_be_written_is_a_problem(user):
    blocker = user["root"] / "file"
    blocker.write_text("not a folder")
    conf = write_config(user, "store", store={"uri": str(blocker / "store")})
    got = run_cli("check", "--conf", str(conf))
    assert got["rc"] == exits.BAD_INPUT
    assert f"{conf}: [store] uri: " in got["err"]


# Bad inputs, each read by the build with Spark and by the check without: both reject it,
# naming the same problem.
BAD_INPUTS = {
    "missing text": ("jsonl", [{"_id": "a", "title": "x"}], "missing column 'text'"),
    "duplicate id": ("jsonl", [{"_id": "a", "title": "", "text": "x"},
                               {"_id": "b", "title": "", "text": "y"},
                               {"_id": "a", "title": "", "text": "z"}],
                     "duplicate ids (for example 'a')"),
    "empty text": ("jsonl", [{"_id": "a", "title": "", "text": "x"},
                             {"_id": "b", "title": None, "text": " "}], "null or empty text"),
    "null id": ("jsonl", [{"_id": None, "title": "", "text": "x"}], "null id"),
    "no rows": ("jsonl", [], "no rows (empty items)"),
    "malformed": ("jsonl-raw", '{"_id": "a", "text": "x"}\n{"_id": "b", "te\n',
                  "a malformed record"),
    "binary text": ("parquet", {"_id": ["a"], "title": [""], "text": [b"\xff"]},
                    "column 'text' is binary, not UTF-8 text"),
    "nested text": ("parquet", {"_id": ["a"], "title": [""], "text": [["x", "y"]]},
                    "column 'text' holds"),
    "missing id": ("parquet", {"id": ["a"], "title": [""], "text": ["x"]},
                   "missing column '_id'"),
}


@pytest.mark.spark
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_check_and_spark_read_agree(spark, tmp_path, case):
    from curindex.errors import InputError
    from curindex.pipeline.corpus import check_texts, read_texts

    kind, rows, fragment = BAD_INPUTS[case]
    if kind == "parquet":
        path = write_parquet(tmp_path / "items.parquet", rows)
    elif kind == "jsonl":
        path = write_jsonl(tmp_path / "items.jsonl", rows)
    else:
        path = tmp_path / "items.jsonl"
        path.write_text(rows)
    cfg = InputConfig(path=str(path))
    with pytest.raises(InputError) as spark_error:
        check_texts(read_texts(spark, cfg, role="items"), role="items", source=str(path))
    src = resolve_source(cfg, role="items")
    try:
        problems = [p for _, p in source_problems(src, inspect_source(src))]
    except InputError as e:
        problems = [str(e)]
    assert fragment in str(spark_error.value)
    assert len(problems) == 1 and fragment in problems[0], problems
