"""The index store on S3: the backend-independent tests of the store test modules against a
moto server on 127.0.0.1 that answers one request at a time (s3_server.py says why), plus what
only an object store does (URI options, downloads into a cache)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from curindex.errors import StoreError
from curindex.store import Store
from s3_server import BUCKET, moto_endpoint
from test_store import *  # noqa: F403 - the shared tests, run here with the S3 store_uri
from test_store import make_version, reopen, rewrite
from test_store_gc import *  # noqa: F403
from test_store_lock import *  # noqa: F403
from test_store_race import *  # noqa: F403


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def store_uri(s3_endpoint: str) -> str:
    # A fresh prefix per test keeps tests apart on the one bucket.
    return f"s3://{BUCKET}/{uuid.uuid4().hex}?endpoint_override={s3_endpoint}&scheme=http"


def test_open_s3_uri(store_uri: str, s3_endpoint: str) -> None:
    store = Store.open(store_uri, create=True)
    assert isinstance(store.fs, pafs.S3FileSystem)
    assert store.uri == store_uri
    assert store.root.startswith(f"{BUCKET}/") and "?" not in store.root
    make_version(store, "v1")
    # A filesystem built by hand reads what the URI-opened one wrote.
    fs = pafs.S3FileSystem(
        endpoint_override=s3_endpoint,
        scheme="http",
        access_key="test",
        secret_key="test",
        region="us-east-1",
    )
    assert Store(store.uri, fs, store.root).read_bytes("v1", "G.npy") == b"v1"
    with pytest.raises(StoreError, match="cannot open store"):
        Store.open(f"s3://{BUCKET}/x?no_such_option=1")


def test_local_path_downloads_and_rechecks_the_cache(store_uri: str, tmp_path: Path) -> None:
    store = reopen(store_uri)
    make_version(store, "v1", {"shards/s.bin": b"0123456789"})
    path = store.local_path("v1", "shards/s.bin", cache_dir=str(tmp_path))
    assert path == str(tmp_path / "v1" / "shards" / "s.bin")
    assert Path(path).read_bytes() == b"0123456789"
    Path(path).write_bytes(b"tampered!!")  # a damaged cached copy is fetched again
    assert Path(store.local_path("v1", "shards/s.bin", cache_dir=str(tmp_path))).read_bytes() == (
        b"0123456789"
    )
    rewrite(store, "v1", "shards/s.bin", lambda d: d.upper() + b"!")
    Path(path).unlink()
    with pytest.raises(StoreError, match=r"file shards/s\.bin: download does not match"):
        store.local_path("v1", "shards/s.bin", cache_dir=str(tmp_path))
    assert list(tmp_path.glob("v1/shards/*")) == []  # nothing half-written is left
    with pytest.raises(StoreError, match="not in the manifest"):
        store.local_path("v1", "other.bin", cache_dir=str(tmp_path))


def test_dead_publisher_lock_is_taken_over_on_s3(store_uri: str) -> None:
    store = reopen(store_uri)
    make_version(store, "a")
    with store.fs.open_output_stream(f"{store.root}/locks/pointer.json") as f:
        f.write(b'{"owner": "dead", "expires_at": 1}')
    store.set_current("a")
    assert store.current() == "a"
    assert store.fs.get_file_info(f"{store.root}/locks/pointer.json").type == (
        pafs.FileType.NotFound
    )  # released: deleted, as it was still ours
