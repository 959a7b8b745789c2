"""A reader checks what it maps before it uses it, and a build reports what stops it: crafted
files a version's manifest hashes (id maps, anchors, faiss labels) are IntegrityErrors (exit
4), never a crash; a build killed after its manifest leaves nothing behind once run again; a
user scorer that raises, a blank id and a full disk are named errors."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from curindex.config import config_from_dict
from curindex.errors import InputError, IntegrityError, ScorerError, StoreError
from curindex.pipeline import run_build
from curindex.search import Searcher
from curindex.search.shardindex import LABEL_SHIFT
from curindex.store import Store
from support import tiny_config, write_jsonl

pytestmark = pytest.mark.spark

@pytest.fixture
def built(tiny_published):
    return tiny_published


def copy_store(cfg, tmp_path: Path) -> Path:
    dest = tmp_path / "store"
    shutil.copytree(cfg.store.uri, dest, symlinks=True)
    return dest


def rehash(store: Path, rel: str, version: str = "v") -> None:
    """Record a changed file's size and sha256 in the manifest, as a forger would."""
    path = store / "versions" / version / "manifest.json"
    doc = json.loads(path.read_text())
    data = (store / "versions" / version / rel).read_bytes()
    doc["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path.write_text(json.dumps(doc))


def shard0(store: Path, kind: str) -> str:
    doc = json.loads((store / "versions" / "v" / "manifest.json").read_text())
    return doc["index"]["shards"][0][kind]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curindex", *args], capture_output=True,
                          text=True, timeout=120)


def test_a_crafted_arrow_id_map_is_refused_not_a_crash(built, tmp_path):
    store = copy_store(built, tmp_path)
    rel = shard0(store, "ids")
    table = pa.ipc.open_file(pa.memory_map(str(store / "versions" / "v" / rel))).read_all()
    n = table.num_rows
    # Offsets far beyond the text buffer (the last one in it, as a writer checks): reading a
    # text would read outside the mapping.
    offsets = np.concatenate([[0], np.full(n - 1, 1 << 30), [8]]).astype(np.int32)
    text = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.tobytes()),
                                                 pa.py_buffer(b"x" * 8)])
    crafted = pa.table({"label": table.column("label"), "item_id": table.column("item_id"),
                        "text": text})
    with pa.OSFile(str(store / "versions" / "v" / rel), "wb") as sink, \
            pa.ipc.new_file(sink, crafted.schema) as w:
        w.write_table(crafted)
    rehash(store, rel)
    assert cli("verify", "--store", str(store)).returncode == 0  # hashes agree
    done = cli("search", "--store", str(store), "--k", "3", "--budget", "150", "river data")
    assert done.returncode == 4, (done.returncode, done.stderr[-2000:])
    assert "ids-00000.arrow" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("damage", ["no text column", "one row fewer", "null text"])
def test_crafted_anchors_are_refused(built, tmp_path, damage):
    store = copy_store(built, tmp_path)
    rel = "anchors/items.parquet"
    path = store / "versions" / "v" / rel
    table = pq.read_table(path)
    if damage == "no text column":
        table = table.drop_columns(["text"])
    elif damage == "one row fewer":
        table = table.slice(1)
    else:
        table = table.set_column(1, "text", pa.array([None] * table.num_rows, pa.string()))
    pq.write_table(table, path)
    rehash(store, rel)
    with pytest.raises(IntegrityError, match=r"anchors/items\.parquet"):
        Searcher.open(str(store))


@pytest.mark.parametrize(("section", "key", "value", "fragment"), [
    ("search", "method", "evil", "served search is malformed"),
    ("search", "budget", 10**12, "served search is malformed"),
    ("config", "nprobe", 2**63 + 5, r"\[index\] nprobe"),
    ("index", "shards", [], "lists no shards"),
])
def test_recorded_search_settings_are_checked(built, tmp_path, section, key, value, fragment):
    store = copy_store(built, tmp_path)
    path = store / "versions" / "v" / "manifest.json"
    doc = json.loads(path.read_text())
    {"search": doc["search"]["default"], "config": doc["config"]["index"],
     "index": doc["index"]}[section][key] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match=fragment):
        Searcher.open(str(store)).search(["river data"], k=3, budget=40)


def test_faiss_labels_outside_the_shards_are_refused(built, tmp_path):
    store = copy_store(built, tmp_path)
    rel = shard0(store, "index")
    path = store / "versions" / "v" / rel
    index = faiss.read_index(str(path))
    vectors = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
    rows = np.arange(index.ntotal, dtype=np.int64)
    # Half the labels name a shard the version lacks, half a row past the shard's end.
    labels = np.where(rows % 2 == 0, (99 << LABEL_SHIFT) | rows, rows + 10**6)
    crafted = faiss.IndexIDMap(faiss.IndexFlatIP(index.d))
    crafted.add_with_ids(vectors, labels)
    faiss.write_index(crafted, str(path))
    rehash(store, rel)
    with pytest.raises(IntegrityError, match=r"shard-00000.faiss holds label \d+, which names "
                                             "no item"):
        Searcher.open(str(store)).search(["river data", "storm engine"], k=3, budget=150)


def test_a_rerun_of_a_version_committed_before_its_cleanup_removes_the_leftovers(spark, built):
    from curindex.pipeline.chunks import chunk_name

    store = Path(built.store.uri)
    # What a build killed after writing its manifest leaves: its score chunks, stage states
    # and the record of its work folder.
    chunks = store / "_work" / "v" / "scores"
    chunks.mkdir(parents=True)
    (chunks / chunk_name(0)).write_bytes(b"score rows")
    Store.open(str(store)).save_build_state("v", "score", {"pairs_scored": 1})
    Store.open(str(store)).record_build("v", str(store / "_work" / "v"))
    result = run_build(spark, built, version="v")
    assert result.manifest is not None and result.manifest.version == "v"
    assert not (store / "_work" / "v").exists()
    assert not (store / "_builds" / "v" / "score.json").exists()
    Store.open(str(store)).verify("v")


def test_a_user_scorer_that_raises_mid_build_is_a_scorer_error(spark, tiny_corpus, tmp_path):
    from curindex.cli.exits import BAD_INPUT, exit_code

    raw = tiny_config(tiny_corpus, scorer={"kind": "callable", "target": "scorers:raising"})
    with pytest.raises(ScorerError) as e:
        run_build(spark, config_from_dict(raw), version="r")
    assert "scorers:raising" in str(e.value) and "broken on purpose" in str(e.value)
    assert exit_code(e.value) == BAD_INPUT


@pytest.mark.parametrize("column", ["_id", "text"])
def test_unicode_whitespace_is_blank(spark, tiny_corpus, tmp_path, column):
    rows = [{"_id": i, "title": "", "text": t} for i, t in tiny_corpus["items"]]
    rows.append({"_id": "doc-blank", "title": "", "text": "some words", column: "\u3000\u2003"})
    path = write_jsonl(tmp_path / "blank.jsonl", rows)
    raw = tiny_config(tiny_corpus, items={"path": str(path)})
    with pytest.raises(InputError, match="empty id" if column == "_id" else "empty text"):
        run_build(spark, config_from_dict(raw), version="b")


class _FullDisk(pafs.FileSystemHandler):
    """The local filesystem, except that files written under `_temporary/` go to /dev/full,
    which answers every write with ENOSPC, as a full disk does."""

    def __init__(self) -> None:
        self.fs = pafs.LocalFileSystem()

    def open_output_stream(self, path, metadata):
        if "/_temporary/" in path:
            return pa.OSFile("/dev/full", "wb")
        return self.fs.open_output_stream(path)

    def get_type_name(self):
        return "full-disk"

    def equals(self, other):
        return self is other

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not here")

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_append_stream(self, path, metadata):
        raise OSError("not here")


def test_a_full_disk_while_scoring_names_the_chunk(tmp_path):
    from curindex.kinds import scorerows
    from curindex.pipeline.chunks import ChunkWriter

    fs = pafs.PyFileSystem(_FullDisk())
    n = 5000
    batch = pa.RecordBatch.from_arrays(
        [pa.array([f"doc{i}" for i in range(n)]), pa.array(np.zeros(n, np.int32)),
         pa.array(["text"] * n), pa.array(np.zeros(n, bool)),
         scorerows.list_array(np.ones((n, 40), np.float32))],
        schema=scorerows.arrow_schema(bi=False))
    with pytest.raises(StoreError) as e:  # Parquet's header is the first write that fails
        writer = ChunkWriter(fs, str(tmp_path / "scores"), 7)
        writer.write(batch)
        writer.commit()
    assert "chunk-00007" in str(e.value) and "no space left" in str(e.value).lower()
    assert os.strerror(errno.ENOSPC).lower() in str(e.value).lower()
