"""Signed manifests: with CURINDEX_MANIFEST_KEY set, commit signs and readers check."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from curindex.errors import IntegrityError, StoreError
from curindex.store import Store
from test_store import make_version, reopen, rewrite

KEY_ENV = "CURINDEX_MANIFEST_KEY"


def stored(store: Store, version: str, name: str) -> bytes:
    with store.fs.open_input_stream(f"{store.root}/versions/{version}/{name}") as f:
        return f.read()


def test_signed_manifests_are_checked_by_readers_with_the_key(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "key one")
    make_version(store, "v1")
    manifest = stored(store, "v1", "manifest.json")
    want = hmac.new(b"key one", manifest, hashlib.sha256).hexdigest()
    assert stored(store, "v1", "manifest.json.sig").decode() == want
    assert store.read_manifest("v1")["version"] == "v1"
    store.set_current("v1")

    monkeypatch.setenv(KEY_ENV, "key two")
    with pytest.raises(IntegrityError, match=r"v1: manifest\.json: signature does not match"):
        reopen(store.uri).read_manifest("v1")

    monkeypatch.setenv(KEY_ENV, "key one")
    rewrite(store, "v1", "manifest.json",
            lambda d: json.dumps({**json.loads(d), "note": "forged"}).encode())
    with pytest.raises(IntegrityError, match="signature does not match"):
        store.read_manifest("v1")

    monkeypatch.delenv(KEY_ENV)
    make_version(store, "v2")  # written without a key: no signature
    assert store.read_manifest("v1")["note"] == "forged"  # without a key nothing is checked
    monkeypatch.setenv(KEY_ENV, "key one")
    with pytest.raises(IntegrityError, match=r"v2: manifest\.json has no signature"):
        store.read_manifest("v2")
    with pytest.raises(IntegrityError, match="no signature"):
        store.set_current("v2")
    complete, bad = store.versions_listing()
    assert complete == [] and [v for v, _ in bad] == ["v1", "v2"]
    with pytest.raises(StoreError, match="written by commit_version only"):
        store.write_bytes("v3", "manifest.json.sig", b"x")
