"""What a store holds is data, read within bounds: JSON only from regular files inside the
store, under a size and a nesting cap; no symbolic link inside a store is followed to read,
list or delete; a committed version's build leftovers are removed; lock holders are printed
escaped. Each failure is a named curindex error with its exit code."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from curindex.cli import main
from curindex.cli.exits import CONFLICT, INTEGRITY
from curindex.errors import ConflictError, IntegrityError
from curindex.store import Holder, Store
from curindex.store.pointer import Pointer


def make_version(store: Store, version: str) -> dict:
    store.begin_version(version)
    entry = store.write_bytes(version, "G.npy", version.encode())
    return store.commit_version(version, {"note": version}, [entry])


def published(tmp_path: Path, *versions: str) -> Store:
    from curindex.ops.publish import publish_version

    store = Store.open(str(tmp_path / "store"), create=True)
    for v in versions:
        make_version(store, v)
        publish_version(store, v)
    return store


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_deeply_nested_old_manifest_is_a_named_error(tmp_path: Path, capsys) -> None:
    store = published(tmp_path, "a", "b", "c")
    bomb = tmp_path / "store" / "versions" / "a" / "manifest.json"
    bomb.write_bytes(b"[" * 200_000 + b"]" * 200_000)

    code, out, err = run_cli(capsys, "versions", "--store", store.uri)
    assert code == 0
    assert "skipped version a:" in err and "nest" in err  # the others are still listed
    assert "b" in out and "c" in out
    code, out, err = run_cli(capsys, "prune", "--store", store.uri, "--keep", "1")
    assert code == INTEGRITY, err
    assert "the manifest of version a cannot be read" in err and "nest" in err
    assert "Traceback" not in err
    assert store.list_versions() == ["b", "c"]


@pytest.mark.parametrize("what", ["CURRENT", "versions/a/manifest.json",
                                  "_builds/a/score.json", "locks/build-a.json"])
def test_json_is_read_only_from_regular_files(tmp_path: Path, what: str) -> None:
    store = published(tmp_path, "a")
    (tmp_path / "store" / "_builds" / "a").mkdir(parents=True, exist_ok=True)
    (tmp_path / "store" / "locks").mkdir(exist_ok=True)
    path = tmp_path / "store" / what
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")
    t0 = time.monotonic()
    with pytest.raises(IntegrityError, match=r"symbolic link|not a regular file") as e:
        if what == "CURRENT":
            store.current()
        elif what.startswith("versions"):
            store.read_manifest("a")
        elif what.startswith("_builds"):
            store.load_build_state("a", "score")
        else:
            store.build_lock("a").acquire()
    assert what.split("/")[-1] in str(e.value)
    assert time.monotonic() - t0 < 5  # refused, not read until memory runs out


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    store = published(tmp_path, "a")
    current = tmp_path / "store" / "CURRENT"
    current.unlink()
    os.mkfifo(current)  # opening it would wait for a writer forever
    with pytest.raises(IntegrityError, match=r"CURRENT.*not a regular file"):
        store.current()


def test_json_from_a_store_has_a_size_cap(tmp_path: Path, monkeypatch) -> None:
    import curindex.store.io as store_io

    store = published(tmp_path, "a")
    monkeypatch.setattr(store_io, "MAX_JSON_BYTES", 100)
    with pytest.raises(IntegrityError, match=r"manifest.json .* larger than 100 bytes"):
        store.read_manifest("a")


def test_a_symlink_inside_a_store_is_never_followed(tmp_path: Path) -> None:
    other = published(tmp_path / "other", "x", "y")
    root = Path(other.root)
    store = published(tmp_path, "a")
    mine = Path(store.root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    # A build state folder, the history and a version file that are links into another store.
    (mine / "_builds").mkdir(exist_ok=True)
    (mine / "_builds" / "b").symlink_to(root / "versions" / "x")
    for entry in (mine / "history").iterdir():
        entry.unlink()
    (mine / "history").rmdir()
    (mine / "history").symlink_to(root / "history")
    with pytest.raises(IntegrityError, match="symbolic link"):
        store.history()
    with pytest.raises(IntegrityError, match="symbolic link"):
        store.clear_build_state("b")
    old = time.time() - 10 * 86400
    os.utime(mine / "_builds" / "b", (old, old), follow_symlinks=False)
    result = store.prune(keep=0, build_retention_s=0)
    assert any("symbolic link" in why for _, why in result.skipped), result.skipped
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    g = mine / "versions" / "a" / "G.npy"
    g.unlink()
    g.symlink_to(root / "versions" / "x" / "G.npy")
    with pytest.raises(IntegrityError, match="symbolic link"):
        store.read_bytes("a", "G.npy")
    with pytest.raises(IntegrityError, match="symbolic link"):
        store.local_path("a", "G.npy")


def test_leftovers_of_a_committed_build_go_at_the_next_prune(tmp_path: Path) -> None:
    """A build killed after its manifest was written left its work folder and stage states."""
    store = published(tmp_path, "a")
    work = Path(store.root) / "_work" / "a" / "scores"
    work.mkdir(parents=True)
    (work / "chunk-00000.parquet").write_bytes(b"rows")
    store.save_build_state("a", "score", {"done": True})
    store.record_build("a", str(work.parent))
    result = store.prune(keep=5)
    assert result.versions == []
    assert result.work_dirs == [str(work.parent)]
    assert not work.parent.exists()
    assert store.load_build_state("a", "score") is None
    assert store.list_versions() == ["a"] and store.current() == "a"
    assert store.prune(keep=5).work_dirs == []  # nothing left to report


EVIL = "\x1b]0;pwned\x07\x1b[2J"


def _evil_lock(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"owner": "x", "host": f"far{EVIL}", "pid": 1,
                                "since": f"now{EVIL}", "expires_at": time.time() + 3600}))


def test_lock_holders_are_described_escaped(tmp_path: Path) -> None:
    store = published(tmp_path, "a")
    _evil_lock(Path(store.root) / "locks" / "build-b.json")
    with pytest.raises(ConflictError) as e:
        store.build_lock("b").acquire()
    assert "\x1b" not in str(e.value) and "\x07" not in str(e.value)
    assert "far\\x1b]0;pwned\\x07" in str(e.value)
    holder = Holder("o", EVIL, 1, EVIL, time.time() + 60)
    assert holder.describe().isprintable()
    assert socket.gethostname()  # the holder above is another host's: live until it expires


def test_the_cli_prints_errors_escaped(tmp_path: Path, capsys, monkeypatch) -> None:
    store = published(tmp_path, "a")
    make_version(store, "b")
    _evil_lock(Path(store.root) / "locks" / "pointer.json")
    monkeypatch.setattr(Pointer, "lock_wait_s", 0.2)
    code, out, err = run_cli(capsys, "publish", "--store", store.uri, "b")
    assert code == CONFLICT
    assert "pointer lock is held by" in err
    assert "\x1b" not in err and "\x07" not in err and out == ""
