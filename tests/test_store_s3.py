"""The index store on S3: the backend-independent tests of test_store.py against a moto server
on 127.0.0.1, plus what only an object store does (URI options, downloads into a cache).

The server handles one request at a time. Publishing and locks rest on S3's conditional writes
(If-None-Match, If-Match), which real S3 evaluates atomically with the write; moto checks the
condition and then writes without a lock, so two concurrent requests could both pass it. A test
endpoint that serialises requests is as atomic as S3, and the race tests then test our code,
not moto's.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

try:
    import boto3
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server
except ImportError:
    pytest.skip("moto[server] and boto3 are needed for the S3 store tests", allow_module_level=True)

from curindex.errors import StoreError
from curindex.store import Store
from test_store import *  # noqa: F403 - the shared tests, run here with the S3 store_uri
from test_store import make_version, reopen, rewrite


def serialised(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    """The WSGI ``app``, answering one request at a time (see the module docstring)."""
    lock = threading.Lock()

    def one_at_a_time(environ: dict, start_response: Callable) -> list[bytes]:
        with lock:
            # The body is produced inside the lock: a lazy iterable could still be working.
            return list(app(environ, start_response))

    return one_at_a_time

BUCKET = "curindex-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        # Set before anything starts, so that spawned race workers inherit them too.
        for key, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(key, value)
        # One log line per request would cost more than the request.
        mp.setattr(logging.getLogger("werkzeug"), "level", logging.WARNING)
        app = serialised(DomainDispatcherApplication(create_backend_app))
        server = make_server("127.0.0.1", 0, app, threaded=True,
                             request_handler=MotoRequestHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            endpoint = f"127.0.0.1:{server.server_address[1]}"
            s3 = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            yield endpoint
        finally:
            server.shutdown()
            thread.join()


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
