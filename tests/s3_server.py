"""A moto S3 server on 127.0.0.1 for the store tests, answering one request at a time.

Publishing and locks rest on S3's conditional writes (If-None-Match, If-Match), which real S3
evaluates atomically with the write. moto checks the condition and then writes without a lock,
so two concurrent requests could both pass it; an endpoint that serialises requests is as atomic
as S3, and the race tests then test the store's code, not moto's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator

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

BUCKET = "curindex-test"


def serialised(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    """The WSGI ``app``, answering one request at a time (see the module docstring)."""
    lock = threading.Lock()

    def one_at_a_time(environ: dict, start_response: Callable) -> list[bytes]:
        with lock:
            # The body is produced inside the lock: a lazy iterable could still be working.
            return list(app(environ, start_response))

    return one_at_a_time


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    """host:port of a fresh serialising moto server with the bucket BUCKET."""
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

