"""Garbage collection and listing on a local store: refusals that protect the store, build
leftovers, dry runs, stores that do not exist. test_store_s3.py runs the tests in __all__ on S3."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import curindex.store.gc as store_gc
from curindex.cli import main
from curindex.cli.exits import NOT_FOUND
from curindex.errors import IntegrityError, StoreError, StoreNotFoundError
from curindex.store import PUBLISH_STEPS, SimulatedCrash, Store
from test_store import make_version, published, reopen, rewrite

__all__ = [
    "test_a_bad_old_manifest_is_listed_apart_and_stops_prune",
    "test_a_missing_store_is_an_error_and_nothing_creates_it",
    "test_dry_run_deletes_nothing_and_names_what_prune_deletes",
    "test_failed_builds_go_after_their_retention",
    "test_history_entries_of_dead_publishes_are_pruned",
    "test_prune_keeps_a_live_build_and_removes_it_once_abandoned",
    "test_prune_refuses_when_current_names_a_missing_version",
    "test_prune_removes_build_state_and_work_with_the_version",
]


def is_local(store: Store) -> bool:
    return isinstance(store.fs, pafs.LocalFileSystem)


def nothing_at(uri: str) -> bool:
    """Whether pyarrow finds nothing at ``uri`` (looked at without the store's code)."""
    fs, path = (pafs.LocalFileSystem(), uri) if "://" not in uri else pafs.FileSystem.from_uri(uri)
    return fs.get_file_info(path.rstrip("/")).type == pafs.FileType.NotFound


def put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def make_work(store: Store, version: str, *, recorded: bool) -> tuple[str, str]:
    """A build's work folder with one file in it: (the name prune reports, a file's path).
    ``recorded``: outside the store, recorded with a Hadoop-style URI; else the local default."""
    if is_local(store) and not recorded:
        folder = store.default_work_dir(version)
        shown = folder
    else:
        folder = f"{store.root}-work/{version}"
        shown = f"file:{folder}" if is_local(store) else f"s3a://{folder}"
        store.record_build(version, shown)
    put(store.fs, f"{folder}/scores/part-0.parquet", b"scores")
    return shown, f"{folder}/scores/part-0.parquet"


def roots(store: Store) -> list[str]:
    """The work root `make_work` records folders under, as a build config's work_dir."""
    return [f"file:{store.root}-work" if is_local(store) else f"s3a://{store.root}-work"]


def exists(store: Store, path: str) -> bool:
    return store.fs.get_file_info(path).type != pafs.FileType.NotFound


def snapshot(store: Store) -> list[tuple[str, int | None]]:
    """Every file and folder under the store and beside it (work folders), with sizes."""
    out = []
    for base in (store.root, f"{store.root}-work"):
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        out += [(i.path, i.size) for i in store.fs.get_file_info(sel)]
    return sorted(out)


def test_prune_refuses_when_current_names_a_missing_version(store: Store) -> None:
    for v in ("v0", "v1", "v2", "v3"):
        make_version(store, v)
    store.set_current("v2")
    store.set_current("v3")
    store.fs.delete_dir(f"{store.root}/versions/v3")  # lost, by hand or a bad restore
    before = snapshot(store)
    for dry_run in (True, False):
        with pytest.raises(IntegrityError, match="CURRENT names version v3, which does not "
                           "exist") as err:
            store.prune(work_roots=roots(store), keep=1, dry_run=dry_run)
        assert "nothing was deleted" in str(err.value)
    assert snapshot(store) == before
    assert store.list_versions() == ["v0", "v1", "v2"]


def test_a_bad_old_manifest_is_listed_apart_and_stops_prune(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    for v in ("v1", "v2", "v3"):
        make_version(store, v)
    store.set_current("v3")
    rewrite(store, "v1", "manifest.json", lambda d: d[: len(d) // 2])  # cut short
    complete, bad = store.versions_listing()
    assert [v for v, _ in complete] == ["v2", "v3"]
    assert complete[0][1]["note"] == "v2"
    assert [v for v, _ in bad] == ["v1"] and "manifest.json is not JSON" in bad[0][1]
    assert store.list_versions() == ["v2", "v3"]
    before = snapshot(store)
    with pytest.raises(IntegrityError, match="the manifest of version v1 cannot be read"):
        store.prune(work_roots=roots(store), keep=0)
    assert snapshot(store) == before

    assert main(["versions", "--store", store.uri]) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["v2", "*"] and rows[1][1] == "v3"
    assert "skipped version v1:" in err and "not JSON" in err


def test_a_missing_store_is_an_error_and_nothing_creates_it(store_uri: str) -> None:
    assert nothing_at(store_uri)
    with pytest.raises(StoreNotFoundError, match="does not exist") as err:
        Store.open(store_uri)
    assert store_uri.split("?")[0] in str(err.value)
    for argv in (["prune", "--keep", "0"], ["prune", "--keep", "0", "--dry-run"], ["versions"],
                 ["verify"], ["publish", "v1"], ["rollback"], ["search", "river"],
                 ["eval"], ["report"]):
        assert main([*argv, "--store", store_uri]) == NOT_FOUND, argv
    assert nothing_at(store_uri)
    # A build creates it; then readers open it, and a pickled store opens where it is sent.
    created = Store.open(store_uri, create=True)
    assert not nothing_at(store_uri)
    assert Store.open(store_uri).list_versions() == []
    assert pickle.loads(pickle.dumps(created)).uri == created.uri


def test_prune_removes_build_state_and_work_with_the_version(store: Store) -> None:
    work = {}
    for i, v in enumerate(("v0", "v1", "v2", "v3")):
        make_version(store, v)
        store.save_build_state(v, "score", {"chunks": i})
        work[v] = make_work(store, v, recorded=i % 2 == 0)
    store.set_current("v2")
    store.set_current("v3")
    result = store.prune(work_roots=roots(store), keep=0)
    assert result.versions == ["v0", "v1"]
    # Kept versions are committed: what their builds left (they died after writing the
    # manifest) goes too, the versions stay.
    assert result.build_states == ["v0", "v1", "v2", "v3"]
    assert result.work_dirs == [work[v][0] for v in ("v0", "v1", "v2", "v3")]
    assert not result.dry_run
    for v in ("v0", "v1", "v2", "v3"):
        assert store.load_build_state(v, "score") is None
        assert not exists(store, work[v][1])
        assert not exists(store, store.build_state_dir(v))
    assert store.list_versions() == ["v2", "v3"]


def test_prune_keeps_a_live_build_and_removes_it_once_abandoned(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_version(store, "done")
    store.set_current("done")
    store.begin_version("wip")
    store.write_bytes("wip", "anchors/items.parquet", b"items")
    store.save_build_state("wip", "prepare", {"items": 3})
    shown, work_file = make_work(store, "wip", recorded=True)
    monkeypatch.setattr(store_gc, "STALE_AFTER_S", -5.0)  # every folder counts as old
    lock = store.build_lock("wip", ttl_s=30.0).acquire()
    try:
        result = store.prune(work_roots=roots(store), keep=0, build_retention_s=0.0)
        assert result.versions == [] and result.build_states == [] and result.work_dirs == []
        assert [what for what, _ in result.skipped] == ["build of version wip"]
        assert "its lock is held by" in result.skipped[0][1]
        assert store.load_build_state("wip", "prepare") == {"items": 3}
        assert store.read_bytes("wip", "anchors/items.parquet") == b"items"
        assert exists(store, work_file)
        lock.check()  # prune did not take it over
    finally:
        lock.release()
    result = store.prune(work_roots=roots(store), keep=0, build_retention_s=0.0)
    assert result.versions == ["wip"]
    assert result.build_states == ["wip"]
    assert result.work_dirs == [shown]
    assert not exists(store, work_file)
    assert not exists(store, f"{store.root}/versions/wip")
    assert store.load_build_state("wip", "prepare") is None
    assert not exists(store, f"{store.root}/locks/build-wip.json")  # taken and released
    assert store.list_versions() == ["done"]


def test_failed_builds_go_after_their_retention(store: Store) -> None:
    store.save_build_state("failed", "prepare", {"items": 3})
    shown, work_file = make_work(store, "failed", recorded=False)
    # a day's retention: it may still be resumed
    young = store.prune(work_roots=roots(store), keep=0)
    assert young.build_states == [] and young.work_dirs == []
    assert store.load_build_state("failed", "prepare") == {"items": 3}
    old = store.prune(work_roots=roots(store), keep=0, build_retention_s=0.0)
    assert old.build_states == ["failed"]
    assert old.work_dirs == [shown]
    assert old.versions == []
    assert store.load_build_state("failed", "prepare") is None
    assert not exists(store, work_file)


def test_dry_run_deletes_nothing_and_names_what_prune_deletes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i, v in enumerate(("v0", "v1", "v2", "v3")):
        make_version(store, v)
        store.save_build_state(v, "score", {"chunks": i})
        make_work(store, v, recorded=i % 2 == 1)
    store.set_current("v2")
    store.set_current("v3")
    store.begin_version("wip")
    store.write_bytes("wip", "G.npy", b"x")
    store.save_build_state("failed", "prepare", {})
    monkeypatch.setattr(store_gc, "STALE_AFTER_S", -5.0)
    before = snapshot(store)
    dry = store.prune(work_roots=roots(store), keep=0, dry_run=True, build_retention_s=0.0)
    assert snapshot(store) == before
    assert dry.dry_run
    assert dry.versions == ["v0", "v1", "wip"]
    assert dry.build_states == ["failed", "v0", "v1", "v2", "v3"]  # v2, v3: kept, built
    real = store.prune(work_roots=roots(store), keep=0, build_retention_s=0.0)
    assert (real.versions, real.build_states, real.work_dirs) == (
        dry.versions, dry.build_states, dry.work_dirs)
    assert len(real.work_dirs) == 4
    assert snapshot(store) != before


def test_history_entries_of_dead_publishes_are_pruned(store: Store) -> None:
    for v in ("a", "b"):
        make_version(store, v)
    store.set_current("a")
    crasher = reopen(store.uri)
    crasher.pointer_lock_ttl_s = 0.5
    crasher.crash_at = "history_written"
    assert "history_written" in PUBLISH_STEPS
    with pytest.raises(SimulatedCrash):
        crasher.set_current("b")
    reopen(store.uri).set_current("b")  # waits out the dead lock; seq 2 is taken, so seq 3
    assert published(store) == ["a", "b"]
    assert [e["seq"] for e in store.history()] == [1, 3]
    result = store.prune(work_roots=roots(store), keep=5)
    assert result.history_entries == ["000000000002.json"]
    assert not exists(store, f"{store.root}/history/000000000002.json")
    assert published(store) == ["a", "b"]


# --- local only -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recorded", "why"),
    [
        ("/", "does not end in /x1"),
        ("file:///tmp", "does not end in /x1"),
    ],
)
def test_work_records_cannot_point_prune_elsewhere(store: Store, recorded: str, why: str) -> None:
    store.save_build_state("x1", "prepare", {})
    store.record_build("x1", recorded)
    result = store.prune(work_roots=roots(store), keep=0, build_retention_s=0.0)
    assert result.work_dirs == []
    assert result.skipped == [(f"work folder {recorded} of version x1", f"it {why}, as a "
                               "build's work folder does")]
    assert result.build_states == ["x1"]  # its state still goes
    assert os.path.isdir("/tmp")


def test_a_work_record_naming_the_store_is_refused(tmp_path: Path) -> None:
    store = reopen(str(tmp_path / "x1"))  # the store's own folder ends in /x1
    make_version(store, "v0")
    store.set_current("v0")
    store.save_build_state("x1", "prepare", {})
    store.record_build("x1", f"file:{store.root}")
    result = store.prune(work_roots=roots(store), keep=0, build_retention_s=0.0)
    assert result.work_dirs == []
    assert result.skipped == [(f"work folder file:{store.root} of version x1", "it holds the "
                               "store")]
    assert store.list_versions() == ["v0"]


@pytest.mark.parametrize("form", ["path", "file-uri", "dotdot", "symlink"])
def test_a_work_record_outside_every_work_root_is_never_deleted(store: Store, tmp_path: Path,
                                                                form: str) -> None:
    """A build record is data: one naming any folder that ends in /<version> (directly, by a
    file: URI with '..', or by a link planted under _work/) makes prune delete nothing there."""
    victim = tmp_path / "elsewhere" / "x1"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    store.save_build_state("x1", "prepare", {})
    if form == "symlink":  # _work/x1 is a link to a folder outside the store
        os.makedirs(f"{store.root}/_work", exist_ok=True)
        os.symlink(victim, f"{store.root}/_work/x1")
    else:
        recorded = {"path": str(victim),
                    "file-uri": f"file://{victim}",
                    "dotdot": f"file://{store.root}/_work/../../elsewhere/x1"}[form]
        store.record_build("x1", recorded)
    result = store.prune(keep=0, build_retention_s=0.0)
    assert (victim / "precious.txt").read_text() == "keep me"
    assert result.work_dirs == []
    assert len(result.skipped) == 1 and "x1" in result.skipped[0][0]
    assert result.build_states == ["x1"]  # the build's own state, inside the store, goes
    if form == "symlink":
        assert os.path.islink(f"{store.root}/_work/x1")  # not followed, not removed either


def test_a_configured_work_dir_is_where_recorded_folders_may_go(store: Store,
                                                               tmp_path: Path) -> None:
    work = tmp_path / "spark-work"
    (work / "x1" / "scores").mkdir(parents=True)
    store.save_build_state("x1", "prepare", {})
    store.record_build("x1", f"file:{work}/x1")
    kept = store.prune(keep=0, build_retention_s=0.0)
    assert kept.work_dirs == [] and (work / "x1").is_dir()
    # the record stays, so that a prune that knows the work_dir can still remove it
    gone = store.prune(keep=0, build_retention_s=0.0, work_roots=[f"file:{work}"])
    assert gone.work_dirs == [f"file:{work}/x1"] and not (work / "x1").exists()


def test_a_symlinked_version_folder_is_neither_read_nor_pruned(tmp_path: Path) -> None:
    other = reopen(str(tmp_path / "other"))
    make_version(other, "v9")
    other.set_current("v9")
    store = reopen(str(tmp_path / "mine"))
    for v in ("v0", "v1"):
        make_version(store, v)
    store.set_current("v1")
    os.symlink(f"{other.root}/versions/v9", f"{store.root}/versions/v9")
    assert store.list_versions() == ["v0", "v1"]
    with pytest.raises(StoreError, match="symbolic link"):
        store.read_manifest("v9")
    result = store.prune(keep=0, build_retention_s=0.0)
    assert result.versions == ["v0"]
    assert ("version folder v9", f"it is a symbolic link (to {other.root}/versions/v9)") \
        in result.skipped
    assert os.path.isfile(f"{other.root}/versions/v9/manifest.json")
    assert other.list_versions() == ["v9"]
    assert os.path.islink(f"{store.root}/versions/v9")


@pytest.mark.parametrize(
    ("uri", "mapped"),
    [
        ("s3a://bucket/work/v1", "s3://bucket/work/v1"),
        ("s3n://bucket/work/v1", "s3://bucket/work/v1"),
        ("s3://bucket/work/v1", "s3://bucket/work/v1"),
        ("file:/data/work/v1", "/data/work/v1"),
        ("file:///data/work/v1", "/data/work/v1"),
        ("/data/work/v1", "/data/work/v1"),
        ("hdfs://nn:8020/work/v1", "hdfs://nn:8020/work/v1"),
    ],
)
def test_hadoop_work_uris_map_to_pyarrow(uri: str, mapped: str) -> None:
    assert store_gc._map_work_uri(uri) == mapped


def test_build_state_round_trip_and_names(store: Store) -> None:
    assert store.load_build_state("v1", "score") is None
    store.save_build_state("v1", "score", {"chunks": [1, 2], "config_digest": "abc"})
    assert store.load_build_state("v1", "score") == {"chunks": [1, 2], "config_digest": "abc"}
    assert store.build_state_dir("v1") == f"{store.root}/_builds/v1"
    assert store.default_work_dir("v1") == f"{store.root}/_work/v1"
    store.record_build("v1", "s3a://bucket/work/v1")
    store.clear_build_state("v1")
    assert store.load_build_state("v1", "score") is None
    with open(f"{store.root}/_builds/v1/build.json") as f:
        assert json.load(f)["work_uri"] == "s3a://bucket/work/v1"  # the record stays
    for bad in ("build", "../x", "", "a/b"):
        with pytest.raises(StoreError, match="invalid build stage name"):
            store.save_build_state("v1", bad, {})
    with pytest.raises(StoreError, match="invalid version id"):
        store.save_build_state("../v1", "score", {})
    Path(f"{store.root}/_builds/v1/score.json").write_text("[1, 2]")
    with pytest.raises(IntegrityError, match="is not a JSON object"):
        store.load_build_state("v1", "score")


def test_a_broken_history_is_reported_and_prune_goes_on(store: Store) -> None:
    for v in ("a", "b", "c"):
        make_version(store, v)
    for v in ("a", "b", "c"):
        store.set_current(v)
    os.unlink(f"{store.root}/history/000000000002.json")
    with pytest.raises(IntegrityError, match=r"000000000002\.json is missing from the history"):
        store.history()
    result = store.prune(work_roots=roots(store), keep=0)
    assert result.versions == ["a"]
    assert result.history_entries == []
    assert [what for what, _ in result.skipped] == ["history entries"]
    assert "is missing from the history chain" in result.skipped[0][1]
    assert sorted(os.listdir(f"{store.root}/history")) == ["000000000001.json",
                                                           "000000000003.json"]
