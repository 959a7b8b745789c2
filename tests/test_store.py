"""The index store on a local folder. test_store_s3.py runs the tests in __all__ against S3."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import curindex.store.gc as store_gc
import curindex.store.io as store_io
from curindex.cli import main
from curindex.cli.exits import NOT_FOUND
from curindex.errors import StoreError
from curindex.ops.publish import publish_version, rollback
from curindex.store import (
    PUBLISH_STEPS,
    FileEntry,
    SimulatedCrash,
    Store,
    validate_relpath,
    validate_version_id,
)
from store_race_worker import candidate, race

# The tests that do not depend on the backend; test_store_s3.py imports these.
__all__ = [
    "test_cli_commands",
    "test_commit_refuses_missing_or_resized_files",
    "test_committed_version_is_immutable",
    "test_crash_at_every_publish_step_leaves_a_good_current",
    "test_incomplete_versions_are_invisible_and_restartable",
    "test_manifest_paths_cannot_escape",
    "test_prune_keeps_newest_current_and_previous",
    "test_publish_is_compare_and_swap",
    "test_publish_refuses_incomplete_or_corrupt_versions",
    "test_references_are_followed_verified_and_kept_by_prune",
    "test_rollback",
    "test_two_processes_race_to_publish",
    "test_verify_names_the_damaged_file",
    "test_version_round_trip",
]

def reopen(uri: str) -> Store:
    return Store.open(uri, create=True)


def make_version(store: Store, version: str, files: dict[str, bytes] | None = None) -> dict:
    store.begin_version(version)
    entries = [
        store.write_bytes(version, rel, data)
        for rel, data in (files or {"G.npy": version.encode()}).items()
    ]
    return store.commit_version(version, {"note": version}, entries)


def rewrite(store: Store, version: str, rel: str, change: Callable[[bytes], bytes]) -> None:
    path = f"{store.root}/versions/{version}/{rel}"
    with store.fs.open_input_stream(path) as f:
        data = f.read()
    with store.fs.open_output_stream(path) as f:
        f.write(change(data))


def published(store: Store) -> list[str]:
    return [e["version"] for e in store.history()]


# --- backend-independent tests (run on S3 too) ------------------------------------------------


def test_version_round_trip(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_io, "CHUNK", 4096)  # several chunks per upload
    payload = os.urandom(50_000)
    (tmp_path / "shard.faiss").write_bytes(payload)
    store.begin_version("v1")
    g = store.write_bytes("v1", "G.npy", b"abc")
    shard = store.upload_file("v1", "shards/shard-00000.faiss", str(tmp_path / "shard.faiss"))
    assert g == FileEntry("G.npy", 3, hashlib.sha256(b"abc").hexdigest())
    assert shard == FileEntry(
        "shards/shard-00000.faiss", 50_000, hashlib.sha256(payload).hexdigest()
    )
    manifest = store.commit_version("v1", {"config": {"k": 1}}, [g, shard])
    assert manifest["version"] == "v1" and manifest["config"] == {"k": 1}
    assert manifest["files"]["G.npy"] == {"size": 3, "sha256": g.sha256}
    assert store.read_manifest("v1") == manifest
    assert store.list_versions() == ["v1"]
    assert store.read_bytes("v1", "shards/shard-00000.faiss") == payload
    cache = str(tmp_path / "cache")
    path = store.local_path("v1", "shards/shard-00000.faiss", cache_dir=cache)
    assert Path(path).read_bytes() == payload
    assert store.local_path("v1", "shards/shard-00000.faiss", cache_dir=cache) == path
    store.verify("v1")
    assert pickle.loads(pickle.dumps(store)).read_bytes("v1", "G.npy") == b"abc"


def test_committed_version_is_immutable(store: Store) -> None:
    make_version(store, "v1")
    with pytest.raises(StoreError, match="v1 is committed and immutable"):
        store.begin_version("v1")
    with pytest.raises(StoreError, match="immutable"):
        store.write_bytes("v1", "G.npy", b"changed")
    with pytest.raises(StoreError, match="immutable"):
        store.commit_version("v1", {}, [])
    store.begin_version("v2")
    with pytest.raises(StoreError, match=r"manifest\.json is written by commit_version"):
        store.write_bytes("v2", "manifest.json", b"{}")
    assert store.read_bytes("v1", "G.npy") == b"v1"


def test_incomplete_versions_are_invisible_and_restartable(store: Store) -> None:
    make_version(store, "v1")
    store.begin_version("v2")
    store.write_bytes("v2", "old.bin", b"x")
    assert store.list_versions() == ["v1"]
    with pytest.raises(StoreError, match="v2 does not exist or is incomplete"):
        store.read_manifest("v2")
    with pytest.raises(StoreError, match="v2 does not exist or is incomplete"):
        store.resolve("v2")
    store.begin_version("v2")  # a restarted build starts from nothing
    with pytest.raises(StoreError, match=r"old\.bin is missing"):
        store.read_bytes("v2", "old.bin")
    make_version(store, "v3")
    assert store.list_versions() == ["v1", "v3"]


def test_commit_refuses_missing_or_resized_files(store: Store) -> None:
    store.begin_version("v1")
    a = store.write_bytes("v1", "a", b"abc")
    with pytest.raises(StoreError, match="v1: file b is missing"):
        store.commit_version("v1", {}, [a, FileEntry("b", 1, "0" * 64)])
    with pytest.raises(StoreError, match="file a: size 3 != 4"):
        store.commit_version("v1", {}, [FileEntry("a", 4, a.sha256)])
    with pytest.raises(StoreError, match="invalid file path"):
        store.commit_version("v1", {}, [FileEntry("../a", 3, a.sha256)])
    assert store.list_versions() == []
    store.commit_version("v1", {}, [a])
    assert store.list_versions() == ["v1"]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("flip", "sha256 mismatch"),
        ("truncate", "size 9 != 10"),
        ("delete", "is missing"),
    ],
)
def test_verify_names_the_damaged_file(store: Store, damage: str, problem: str) -> None:
    make_version(store, "v1", {"a.bin": b"0123456789", "shards/s.bin": b"0123456789"})
    rel = "shards/s.bin"
    if damage == "flip":
        rewrite(store, "v1", rel, lambda d: d[:4] + bytes([d[4] ^ 1]) + d[5:])
    elif damage == "truncate":
        rewrite(store, "v1", rel, lambda d: d[:-1])
    else:
        store.fs.delete_file(f"{store.root}/versions/v1/{rel}")
    with pytest.raises(StoreError, match=problem) as err:
        store.verify("v1")
    assert f"store {store.uri}: version v1: file {rel}" in str(err.value)
    if not isinstance(store.fs, pafs.LocalFileSystem):
        # Downloads are checked against the manifest as well.
        with pytest.raises(StoreError, match=rel):
            store.local_path("v1", rel, cache_dir=None)


def test_manifest_paths_cannot_escape(store: Store) -> None:
    make_version(store, "v1")

    def escape(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["files"]["../../outside"] = {"size": 1, "sha256": "0" * 64}
        return json.dumps(doc).encode()

    rewrite(store, "v1", "manifest.json", escape)
    for call in (store.read_manifest, store.verify, store.set_current,
                 lambda v: publish_version(store, v)):
        with pytest.raises(StoreError, match=r"invalid file path '\.\./\.\./outside'"):
            call("v1")
    with pytest.raises(StoreError, match="invalid file path"):
        store.write_bytes("v2", "../x", b"")
    with pytest.raises(StoreError, match="invalid file path"):
        store.local_path("v1", "/etc/passwd")
    with pytest.raises(StoreError, match="invalid version id"):
        store.begin_version("../v1")
    with pytest.raises(StoreError, match="invalid version id"):
        store.read_bytes("..", "G.npy")


def test_publish_is_compare_and_swap(store: Store) -> None:
    assert store.current() is None
    with pytest.raises(StoreError, match="no version has been published"):
        store.resolve()
    make_version(store, "a")
    make_version(store, "b")
    with pytest.raises(StoreError, match="lost a race: CURRENT changed from b to None"):
        store.set_current("a", expect_current="b")
    store.set_current("a", expect_current=None)
    with store.fs.open_input_stream(f"{store.root}/CURRENT") as f:
        pointer = json.loads(f.read())
    assert pointer["version"] == "a" and pointer["previous"] is None and pointer["seq"] == 1
    assert isinstance(pointer["published_at"], str)
    with pytest.raises(StoreError, match="lost a race: CURRENT changed from None to a"):
        store.set_current("b", expect_current=None)
    store.set_current("b", expect_current="a")
    store.set_current("b")  # already current: nothing to do
    assert store.resolve() == "b" and store.resolve("a") == "a"
    assert [(e["version"], e["previous"], e["seq"]) for e in store.history()] == [
        ("a", None, 1),
        ("b", "a", 2),
    ]


def test_publish_refuses_incomplete_or_corrupt_versions(store: Store) -> None:
    make_version(store, "good")
    store.set_current("good")
    store.begin_version("wip")
    store.write_bytes("wip", "G.npy", b"x")
    with pytest.raises(StoreError, match="version wip does not exist or is incomplete"):
        store.set_current("wip")
    make_version(store, "bad")
    rewrite(store, "bad", "G.npy", lambda d: d[::-1])
    with pytest.raises(StoreError, match=r"version bad: file G\.npy: sha256 mismatch"):
        store.set_current("bad")
    with pytest.raises(StoreError, match="version never-built does not exist"):
        store.set_current("never-built")
    assert store.current() == "good"
    store.verify("good")
    assert published(store) == ["good"]


def test_crash_at_every_publish_step_leaves_a_good_current(store: Store) -> None:
    make_version(store, "v0")
    store.set_current("v0")
    old = "v0"
    for i, step in enumerate(PUBLISH_STEPS, start=1):
        new = f"v{i}"
        make_version(store, new)
        crasher = reopen(store.uri)
        crasher.pointer_lock_ttl_s = 0.3  # so that the retry does not wait long for the lock
        crasher.crash_at = step
        with pytest.raises(SimulatedCrash, match=step):
            crasher.set_current(new)
        current = store.current()
        assert current in (old, new), step
        store.verify(current)
        reopen(store.uri).set_current(new)  # a fresh process retries
        assert store.current() == new, step
        store.verify(new)
        old = new
    assert published(store) == [f"v{i}" for i in range(len(PUBLISH_STEPS) + 1)]
    store.crash_at = "no-such-step"
    with pytest.raises(ValueError, match="no-such-step"):
        store.set_current("v0")


def test_rollback(store: Store) -> None:
    with pytest.raises(StoreError, match="nothing has been published"):
        rollback(store)
    for v in ("a", "b", "c"):
        make_version(store, v)
    store.set_current("a")
    with pytest.raises(StoreError, match=r"CURRENT \(a\) has no previous version"):
        rollback(store)
    store.set_current("b")
    store.set_current("c")
    assert rollback(store) == "b"
    assert store.current() == "b"
    assert rollback(store, to="a") == "a"
    with pytest.raises(StoreError, match="nope does not exist"):
        rollback(store, to="nope")
    assert store.current() == "a"
    assert published(store) == ["a", "b", "c", "b", "a"]
    assert store.history()[-1]["previous"] == "b"


def test_prune_keeps_newest_current_and_previous(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.prune(keep=1).versions == []
    for i in range(6):
        make_version(store, f"v{i}")
    store.set_current("v1")
    store.set_current("v0")  # current and previous are now the two oldest
    store.begin_version("wip")
    store.write_bytes("wip", "G.npy", b"x")
    assert store.prune(keep=2).versions == ["v2", "v3"]
    assert store.list_versions() == ["v0", "v1", "v4", "v5"]
    with pytest.raises(StoreError, match="v2 does not exist"):
        store.read_manifest("v2")
    assert store.read_bytes("wip", "G.npy") == b"x"  # fresh leftovers may be a running build
    monkeypatch.setattr(store_gc, "STALE_AFTER_S", -5.0)  # everything counts as old
    assert store.prune(keep=0).versions == ["v4", "v5", "wip"]
    assert store.list_versions() == ["v0", "v1"]
    store.verify("v0")
    store.verify("v1")
    assert rollback(store) == "v1"
    with pytest.raises(StoreError, match="keep must be an int >= 0"):
        store.prune(keep=-1)


def test_references_are_followed_verified_and_kept_by_prune(store: Store, tmp_path: Path) -> None:
    make_version(store, "v1", {"shards/a.bin": b"alpha", "shards/b.bin": b"beta"})
    store.begin_version("v2")
    own = store.write_bytes("v2", "shards/b.bin", b"beta 2")
    with pytest.raises(StoreError, match=r"file shards/zz\.bin is not held by version v1"):
        store.commit_version("v2", {}, [own], references={"shards/zz.bin": "v1"})
    with pytest.raises(StoreError, match=r"shards/b\.bin is both held and referenced"):
        store.commit_version("v2", {}, [own], references={"shards/b.bin": "v1"})
    m2 = store.commit_version("v2", {}, [own], references={"shards/a.bin": "v1"})
    assert m2["references"] == {"shards/a.bin": {"version": "v1", "size": 5,
                                                 "sha256": hashlib.sha256(b"alpha").hexdigest()}}
    assert store.read_bytes("v2", "shards/a.bin") == b"alpha"  # followed to v1
    assert store.read_bytes("v2", "shards/b.bin") == b"beta 2"  # its own
    path = store.local_path("v2", "shards/a.bin", cache_dir=str(tmp_path / "cache"))
    assert Path(path).read_bytes() == b"alpha"
    with store.open_input("v2", "shards/a.bin") as f:
        assert f.read() == b"alpha"
    store.verify("v2")
    rewrite(store, "v1", "shards/a.bin", lambda b: b"ALPHA")
    with pytest.raises(StoreError, match=r"v2: file shards/a.bin \(held by version v1\): sha256"):
        store.verify("v2")
    rewrite(store, "v1", "shards/a.bin", lambda b: b"alpha")
    make_version(store, "v3")
    store.set_current("v2")
    store.set_current("v3")
    # v1 is neither current nor previous, but v2 (previous, so kept) references it.
    assert store.prune(keep=1).versions == []
    assert store.list_versions() == ["v1", "v2", "v3"]
    make_version(store, "v4")
    store.set_current("v4")  # nothing kept references v1 any more
    assert store.prune(keep=1).versions == ["v1", "v2"]
    assert store.list_versions() == ["v3", "v4"]


def test_cli_commands(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*argv: str) -> str:
        assert main([*argv, "--store", store.uri]) == 0
        return capsys.readouterr().out

    make_version(store, "v1")
    make_version(store, "v2", {"a": b"x" * 2000, "b": b"y"})
    assert "no complete versions" not in run("versions")
    assert run("publish", "v1").startswith("published v1")
    run("publish", "v2")
    lines = run("versions").splitlines()
    assert lines[0].split() == ["VERSION", "CREATED_AT", "SCORER", "SERVES", "RECALL", "FILES",
                                "SIZE"]  # "-" where a version records none
    assert lines[1].split()[0] == "v1" and lines[1].endswith("2 B")
    assert lines[2].split()[:2] == ["*", "v2"] and lines[2].endswith("2.0 KiB")
    assert len({len(line) for line in lines}) == 1  # aligned
    assert run("verify") == "ok: v2 (2 files verified)\n"
    assert run("verify", "v1").startswith("ok: v1")
    assert run("rollback").startswith("rolled back to v1")
    assert run("rollback", "--to", "v2").startswith("rolled back to v2")
    assert run("prune", "--keep", "0") == "deleted 0 version(s)\n"
    assert run("verify", "--version", "v1").startswith("ok: v1")
    assert main(["verify", "nope", "--store", store.uri]) == NOT_FOUND
    assert "nope does not exist" in capsys.readouterr().err


def test_two_processes_race_to_publish(store: Store) -> None:
    rounds = 50
    make_version(store, "base")
    store.set_current("base")
    for i in range(3):
        for name in "ab":
            make_version(store, candidate(name, i))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3, timeout=60)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=race,
            args=(store.uri, name, rounds, barrier, results),
        )
        for name in "ab"
    ]
    for p in procs:
        p.start()
    try:
        for i in range(rounds):
            for _ in range(3):  # start, both read CURRENT, both published
                barrier.wait()
            current = store.current()
            assert current in (candidate("a", i), candidate("b", i)), i
            store.verify(current)
        got = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    assert [g[3] for g in got] == [None, None], [g[3] for g in got]
    wins = sum(g[1] for g in got)
    losses = [msg for g in got for msg in g[2]]
    assert wins + len(losses) == 2 * rounds
    assert wins == rounds  # exactly one winner per round
    assert [msg for msg in losses if "lost a race" not in msg] == []
    assert len(store.history()) == rounds + 1


# --- local only -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["../x", "/abs", "a/../b", "", "a\\b", "..", "a..b", ".x", "x" * 129, "current", "a/b", "v1\n"],
)
def test_validate_version_id_refuses(bad: str) -> None:
    with pytest.raises(StoreError, match="invalid version id"):
        validate_version_id(bad)


@pytest.mark.parametrize("good", ["v1", "2024-01-01T00.00.00", "a_b-c.d", "x" * 128])
def test_validate_version_id_accepts(good: str) -> None:
    assert validate_version_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["../x", "/abs", "a/../b", "", "a\\b", "a//b", "a/", "./a", "~/x", "a/~b", "a\0b", "a\nb"],
)
def test_validate_relpath_refuses(bad: str) -> None:
    with pytest.raises(StoreError, match="invalid file path"):
        validate_relpath(bad)


@pytest.mark.parametrize("good", ["G.npy", "shards/shard-00000.faiss", "a/b/c.d", "x~"])
def test_validate_relpath_accepts(good: str) -> None:
    assert validate_relpath(good) == good


def test_open_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = Store.open("store", create=True)
    assert rel.uri == rel.root == str(tmp_path / "store")
    assert isinstance(rel.fs, pafs.LocalFileSystem)
    make_version(rel, "v1")
    # A local store hands out the stored file itself.
    assert rel.local_path("v1", "G.npy") == str(tmp_path / "store/versions/v1/G.npy")
    by_uri = Store.open(f"file://{tmp_path}/store/")
    assert by_uri.root == str(tmp_path / "store")
    assert by_uri.list_versions() == ["v1"]
    copy = pickle.loads(pickle.dumps(rel))
    assert copy.uri == rel.uri and copy.list_versions() == ["v1"]
    with pytest.raises(StoreError, match="empty"):
        Store.open("")


def test_dead_publisher_lock_is_taken_over(store: Store) -> None:
    make_version(store, "a")
    lock = Path(store.root) / "locks" / "pointer.json"
    lock.parent.mkdir()
    lock.write_text("not json")  # garbage counts as expired
    store.set_current("a")
    assert store.current() == "a"
    assert not lock.exists()
