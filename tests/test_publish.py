"""Publishing through curindex.ops.publish: the quality gate, then the store's compare-and-swap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from curindex.cli import main
from curindex.cli.exits import GATE
from curindex.errors import ConflictError, QualityGateError
from curindex.ops.publish import publish_version, rollback
from curindex.store import Store
from test_store import published

FAILED_GATE = {"validation": {"passed": False, "recall": {"10@200": 0.81},
                              "min_recall": {"10@200": 0.9}, "n_test": 25,
                              "failures": ["Top-10-Recall@200 = 0.8100 < 0.9000"]}}
PASSED_GATE = {"validation": {"passed": True, "recall": {"10@200": 0.95}, "min_recall": {},
                              "n_test": 25, "failures": []}}


def commit(store: Store, version: str, body: dict) -> None:
    store.begin_version(version)
    store.commit_version(version, body, [store.write_bytes(version, "G.npy", b"g")])


def test_a_version_under_its_gate_is_not_published(store: Store) -> None:
    commit(store, "good", PASSED_GATE)
    commit(store, "weak", FAILED_GATE)
    publish_version(store, "good")
    with pytest.raises(QualityGateError, match=r"version weak is below its recall thresholds "
                       r"and cannot be published: Top-10-Recall@200 = 0\.8100 < 0\.9000"):
        publish_version(store, "weak")
    assert store.current() == "good"
    assert published(store) == ["good"]
    # The gate is the pipeline's rule, not the store's: set_current swaps whatever verifies.
    store.set_current("weak")
    assert store.current() == "weak"
    assert rollback(store) == "good"  # the previous version passes its gate
    with pytest.raises(QualityGateError):
        rollback(store, to="weak")
    assert published(store) == ["good", "weak", "good"]


def test_publish_compares_against_the_expected_current(store: Store) -> None:
    for v in ("a", "b"):
        commit(store, v, {})
    publish_version(store, "a", expect_current=None)
    with pytest.raises(ConflictError, match="publish b lost a race: CURRENT changed from x to a"):
        publish_version(store, "b", expect_current="x")
    publish_version(store, "b", expect_current="a")
    assert published(store) == ["a", "b"]


def test_cli_publish_applies_the_gate_and_prune_dry_run_deletes_nothing(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*argv: str) -> str:
        assert main([*argv, "--store", store.uri]) == 0
        return capsys.readouterr().out

    for v in ("v0", "v1", "v2"):
        commit(store, v, {})
    commit(store, "weak", FAILED_GATE)
    assert main(["publish", "weak", "--store", store.uri]) == GATE
    assert "version weak is below its recall thresholds" in capsys.readouterr().err
    run("publish", "v1")
    run("publish", "v2")
    assert run("prune", "--keep", "0", "--dry-run") == "would delete 2 version(s): v0, weak\n"
    assert store.list_versions() == ["v0", "v1", "v2", "weak"]
    assert run("prune", "--keep", "0") == "deleted 2 version(s): v0, weak\n"
    assert store.list_versions() == ["v1", "v2"]


def test_the_store_does_not_import_the_gate() -> None:
    code = "import sys, curindex.store; print('curindex.quality.gate' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
