"""Resume: score chunks are committed whole, and a build whose driver dies is re-run with the
same version from where it stopped, to the same index as a build that never failed."""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import suppress
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from cluster import _descendants
from curindex.config import ScorerConfig, config_from_dict
from curindex.kinds import scorerows
from curindex.pipeline import run_build, run_stage
from curindex.pipeline.chunks import TMP_DIR, ChunkWriter, chunk_blocks, committed_chunks
from curindex.pipeline.score import chunk_of, score_fn, score_items
from curindex.scoring.base import build_scorer, fingerprint_for
from curindex.store import Store
from support import make_texts, read_version_vectors, spark_submit, tiny_config, to_toml

TOY = ScorerConfig(kind="toy", options={"dim": "8"})


def _score_rows(ids: list[str], texts: list[str]) -> pa.RecordBatch:
    n = len(ids)
    return pa.RecordBatch.from_arrays(
        [pa.array(ids), pa.array([0] * n, pa.int32()), pa.array(texts), pa.array([False] * n),
         pa.array([[float(i), 1.0] for i in range(n)], pa.list_(pa.float32()))],
        schema=scorerows.ARROW_SCHEMA)


def test_a_chunk_file_appears_only_whole(tmp_path):
    fs, root = pafs.LocalFileSystem(), str(tmp_path / "scores")
    writer = ChunkWriter(fs, root, 3)
    writer.write(_score_rows(["a", "b"], ["x", "y"]))
    writer.write(_score_rows(["c"], ["z"]))
    # Mid-chunk: the rows are in a temporary file that no reader looks at.
    assert not (tmp_path / "scores" / "chunk-00003.parquet").exists()
    assert committed_chunks(fs, root) == {}
    assert [p.parent.name for p in (tmp_path / "scores").rglob("*.parquet")] == [TMP_DIR]
    assert writer.commit() == 3
    assert committed_chunks(fs, root) == {3: f"{root}/chunk-00003.parquet"}
    assert pq.read_table(tmp_path / "scores").column("item_id").to_pylist() == ["a", "b", "c"]
    assert not list((tmp_path / "scores" / TMP_DIR).iterdir())

    # A writer that never finishes (its task failed) leaves no chunk file, and another
    # attempt at a committed chunk replaces it whole.
    failed = ChunkWriter(fs, root, 4)
    failed.write(_score_rows(["d"], ["w"]))
    failed.abort()
    again = ChunkWriter(fs, root, 3)
    again.write(_score_rows(["a", "b", "c"], ["x", "y", "z"]))
    again.commit()
    assert sorted(committed_chunks(fs, root)) == [3]
    assert not list((tmp_path / "scores" / TMP_DIR).iterdir())


def test_a_task_that_dies_mid_chunk_commits_only_its_finished_chunks(tmp_path):
    items = make_texts(30, seed=4, prefix="d")
    queries = ["river data", "piano"]
    batch = pa.RecordBatch.from_pydict({
        "id": [i for i, _ in items], "text": [t for _, t in items],
        "shard": pa.array([0] * 30, pa.int32()), "chunk": pa.array([1] * 12 + [5] * 18, pa.int32()),
    })

    def input_then_crash():  # the task's input stops in the middle of chunk 5
        yield batch.slice(0, 10)
        yield batch.slice(10, 10)
        raise ConnectionError("executor lost")

    run = score_fn(TOY, fingerprint_for(TOY), queries, out_dir=str(tmp_path), block_items=4)
    out = []
    threads = torch.get_num_threads()  # the task sets its own
    try:
        with pytest.raises(ConnectionError):
            for rows in run(input_then_crash()):
                out.append(rows.to_pydict())
    finally:
        torch.set_num_threads(threads)
    assert out == [{"chunk": [1], "items": [12]}]
    assert sorted(committed_chunks(pafs.LocalFileSystem(), str(tmp_path))) == [1]
    got = pq.read_table(tmp_path / "chunk-00001.parquet")
    assert got.column("item_id").to_pylist() == [i for i, _ in items[:12]]
    want = build_scorer(TOY).score_block(queries, [t for _, t in items[:12]])
    np.testing.assert_allclose(np.array(got.column("scores").to_pylist()), want.T, rtol=1e-6)


def test_chunks_are_cut_into_blocks_from_their_first_row():
    chunk = pa.array([0] * 5 + [2] * 7 + [3], pa.int32())
    rows = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(13)], "chunk": chunk})
    for cuts in ([13], [3, 10], [1] * 13, [6, 0, 7]):  # any Arrow batching of the same rows
        starts = np.cumsum([0, *cuts[:-1]])
        batches = [rows.slice(s, n) for s, n in zip(starts, cuts, strict=True)]
        got = [(c, None if b is None else b.column("id").to_pylist())
               for c, b in chunk_blocks(batches, 3)]
        assert got == [(0, ["0", "1", "2"]), (0, ["3", "4"]), (0, None),
                       (2, ["5", "6", "7"]), (2, ["8", "9", "10"]), (2, ["11"]), (2, None),
                       (3, ["12"]), (3, None)]


@pytest.mark.spark
def test_chunk_numbers_are_stable(spark):
    ids = [f"doc{i:05d}" for i in range(6)] + ["", "é"]
    df = spark.createDataFrame([(i,) for i in ids], "id string")

    def chunks(frame, n):
        return dict(frame.select("id", chunk_of("id", n).alias("c")).rdd.map(tuple).collect())

    # Fixed values: a chunk's number never depends on Spark's partitioning or on the session.
    assert chunks(df, 8) == dict(zip(ids, [7, 4, 1, 3, 6, 4, 4, 4], strict=True))
    assert chunks(df.repartition(3), 1000) == dict(
        zip(ids, [983, 428, 17, 371, 470, 212, 180, 4], strict=True))


def _items_df(spark, items):
    return spark.createDataFrame(items, "id string, text string")


@pytest.mark.spark
def test_score_stage_scores_only_the_chunks_not_committed(spark, tmp_path):
    items = make_texts(120, seed=8, prefix="doc")
    queries = [t for _, t in make_texts(5, seed=9, prefix="q", min_words=2, max_words=4)]
    out = tmp_path / "scores"
    kwargs = dict(scorer_cfg=TOY, fingerprint=fingerprint_for(TOY), num_shards=3, partitions=6,
                  block_items=8, out_path=str(out), n_items=len(items))
    first = score_items(spark, _items_df(spark, items), queries=queries, **kwargs)
    assert (first.n_chunks, first.chunks_resumed, first.items_scored) == (6, 0, 120)
    whole = pq.read_table(out).sort_by("item_id")
    files = sorted(out.glob("chunk-*.parquet"))
    assert len(files) == 6 and not (out / TMP_DIR).exists()
    # What a reader of the folder sees: the committed chunks, never an unfinished one.
    (out / TMP_DIR).mkdir()
    (out / TMP_DIR / "chunk-00002.7-0a1b2c3d.parquet").write_bytes(b"PAR1 half a chunk")
    assert spark.read.parquet(str(out)).count() == 120

    lost = {p.name: pq.read_metadata(p).num_rows for p in files[1:3]}
    for name in lost:
        (out / name).unlink()  # as if their tasks were under way when the driver died
    again = score_items(spark, _items_df(spark, items), queries=queries, **kwargs)
    assert (again.chunks_resumed, again.items_resumed) == (4, 120 - sum(lost.values()))
    assert again.items_scored == sum(lost.values())
    assert pq.read_table(out).sort_by("item_id").equals(whole)

    # Other queries: the committed chunks were scored from other inputs and are not kept.
    other = score_items(spark, _items_df(spark, items), queries=queries[:4], **kwargs)
    assert (other.chunks_resumed, other.items_scored) == (0, 120)
    # resume=False starts over too.
    fresh = score_items(spark, _items_df(spark, items), queries=queries[:4], resume=False,
                        **kwargs)
    assert (fresh.chunks_resumed, fresh.items_scored) == (0, 120)


@pytest.mark.spark
def test_run_build_skips_the_stages_an_earlier_attempt_completed(spark, tiny_corpus, caplog):
    import logging

    cfg = config_from_dict(tiny_config(tiny_corpus))
    for stage in ("prepare", "score"):  # then the driver died
        run_stage(spark, cfg, version="r", stage=stage)
    store = Store.open(cfg.store.uri)
    state = Path(store.root) / "_builds" / "r" / "score.json"
    assert json.loads(state.read_text())["pairs_scored_this_run"] == 300 * 50
    with caplog.at_level(logging.INFO, logger="curindex.pipeline"):
        manifest = run_build(spark, cfg, version="r").manifest.to_dict()
    skipped = [r.getMessage() for r in caplog.records if "earlier attempt" in r.getMessage()]
    assert skipped == [f"version r: stage {s}: completed by an earlier attempt with this config: "
                       "skipped" for s in ("prepare", "score")]
    assert manifest["counts"]["pairs_scored"] == manifest["counts"]["pairs_scored_this_run"]
    assert manifest["timings_s"]["score"] > 0
    assert "config_digest" not in manifest["factorization"]


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (the driver JVM, its Python daemon and
    workers), as a lost driver machine would: the tree is frozen first, so nothing forks or
    commits while it is collected."""
    stopped: list[int] = []
    for _ in range(3):
        for p in [pid, *_descendants(pid)]:
            if p not in stopped:
                with suppress(ProcessLookupError):
                    os.kill(p, signal.SIGSTOP)
                stopped.append(p)
    for p in stopped:
        with suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.spark
def test_driver_killed_while_scoring_resumes_to_the_same_index(spark, tiny_corpus, tmp_path):
    slow = {"kind": "callable", "target": "scorers:slow",
            "options": {"dim": "8", "delay_s": "0.4"}}
    spark_section = {"block_items": 8, "score_partitions": 8,
                     "conf": {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false"}}
    raw = tiny_config(tiny_corpus, store=tmp_path / "faulty", scorer=slow, spark=spark_section)
    conf = tmp_path / "faulty.toml"
    conf.write_text(to_toml(raw))

    # Items per chunk, from the same stable chunk numbers the stage uses.
    ids = [i for i, _ in tiny_corpus["items"]]
    by_chunk: dict[int, int] = {}
    for _, c in spark.createDataFrame([(i,) for i in ids], "id string").select(
            "id", chunk_of("id", 8)).collect():
        by_chunk[c] = by_chunk.get(c, 0) + 1
    scores = tmp_path / "faulty" / "_work" / "v" / "scores"

    proc = spark_submit(conf, "--version", "v", wait=False)
    try:
        deadline = time.monotonic() + 300
        while (not list(scores.glob("chunk-*.parquet")) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
        _kill_tree(proc.pid)
    finally:
        out, _ = proc.communicate(timeout=60)
    committed = {int(p.name[6:11]) for p in scores.glob("chunk-*.parquet")}
    assert 0 < len(committed) < len(by_chunk), out[-4000:]
    builds = tmp_path / "faulty" / "_builds" / "v"
    assert (builds / "prepare.json").exists() and not (builds / "score.json").exists()

    proc = spark_submit(conf, "--version", "v")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "stage prepare: completed by an earlier attempt with this config: skipped" in out
    summary, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{\n"):])
    n_q = raw["anchors"]["n_queries"] + raw["anchors"]["n_test"]
    uncommitted = sum(n for c, n in by_chunk.items() if c not in committed)
    assert summary["pairs_scored"] == len(ids) * n_q
    assert 0 < summary["pairs_scored_this_run"] < summary["pairs_scored"]
    assert summary["pairs_scored_this_run"] == uncommitted * n_q

    # The same index as a build that never failed, in another store.
    reference = tiny_config(tiny_corpus, store=tmp_path / "reference", scorer=slow,
                            spark=spark_section)
    run_build(spark, config_from_dict(reference), version="v")
    ids_r, vec_r = read_version_vectors(Store.open(str(tmp_path / "reference")), "v")
    ids_f, vec_f = read_version_vectors(Store.open(str(tmp_path / "faulty")), "v")
    assert ids_r == ids_f
    np.testing.assert_array_equal(vec_r, vec_f)
