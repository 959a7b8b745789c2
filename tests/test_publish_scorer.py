"""Publishing another scorer is explicit (Python API and CLI; the DAG's publish is in
test_dag.py), the report compares only versions of the same scorer, and the store commands
say what each version is: its scorer, served search and recall."""

from __future__ import annotations

import json
import os
import re

import pytest

from curindex.cli import exits, main
from curindex.errors import ScorerChangeError, VersionNotFoundError
from curindex.ops.publish import publish_version, rollback
from curindex.store import Store

MAXSIM = {"kind": "maxsim-minilm", "fingerprint": "sha256:" + "a" * 32}
CROSS = {"kind": "cross-encoder", "fingerprint": "sha256:" + "b" * 32}


def commit(store: Store, version: str, scorer: dict | None, **body) -> None:
    store.begin_version(version)
    if scorer is not None:
        body["scorer"] = scorer
    store.commit_version(version, body, [store.write_bytes(version, "G.npy", version.encode())])


def passed(recall: dict) -> dict:
    """A validation section whose gate passed."""
    return {"passed": True, "recall": recall, "min_recall": {}, "n_test": 25, "failures": []}


def test_publishing_another_scorer_is_refused_unless_allowed(store: Store) -> None:
    commit(store, "v1", MAXSIM)
    commit(store, "v2", CROSS)
    commit(store, "v3", MAXSIM)
    commit(store, "old", None)  # a version that records no scorer is not compared
    publish_version(store, "v1")
    with pytest.raises(ScorerChangeError) as e:
        publish_version(store, "v2")
    assert (f"version v2 was built with scorer cross-encoder ({CROSS['fingerprint']}), the "
            f"current version v1 with maxsim-minilm ({MAXSIM['fingerprint']})") in str(e.value)
    assert "allow_scorer_change" in str(e.value)
    assert store.current() == "v1"
    publish_version(store, "v3")  # the same scorer: published as before
    publish_version(store, "v2", allow_scorer_change=True)
    assert store.current() == "v2"
    assert rollback(store) == "v3"  # a rollback undoes a scorer change without asking
    publish_version(store, "old")
    assert [h["version"] for h in store.history()] == ["v1", "v3", "v2", "v3", "old"]


def test_cli_publish_needs_allow_scorer_change(store: Store, capfd) -> None:
    commit(store, "v1", MAXSIM)
    commit(store, "v2", CROSS)
    assert main(["publish", "v1", "--store", store.uri]) == 0
    capfd.readouterr()
    assert main(["publish", "v2", "--store", store.uri, "-o", "json"]) == exits.GATE
    out, err = capfd.readouterr()
    assert out == "" and err.count("error: version v2 was built with scorer cross-encoder") == 1
    assert "--allow-scorer-change" in err and store.current() == "v1"
    assert main(["publish", "v2", "--store", store.uri, "--allow-scorer-change",
                 "-o", "json"]) == 0
    assert json.loads(capfd.readouterr().out) == {"store": store.uri, "version": "v2",
                                                  "previous": "v1"}


def test_rollback_without_a_previous_version_is_not_found(store: Store, capfd) -> None:
    commit(store, "v1", MAXSIM)
    publish_version(store, "v1")
    with pytest.raises(VersionNotFoundError, match=r"CURRENT \(v1\) has no previous version"):
        rollback(store)
    assert main(["rollback", "--store", store.uri]) == exits.NOT_FOUND
    assert "has no previous version" in capfd.readouterr().err


def test_versions_shows_scorer_served_search_and_recall(store: Store, capfd) -> None:
    search = {"default": {"method": "adaptive", "rounds": 4, "seed": "anchors",
                          "seed_size": 0, "budget": 100}}
    commit(store, "v1", MAXSIM, search=search,
           validation=passed({"1@100": 0.97, "10@100": 0.9123}),
           config={"validate": {"objective": "10@100"}})
    commit(store, "v2", CROSS, validation=passed({"10@200": 0.5}))
    commit(store, "bare", None)
    publish_version(store, "v1")
    assert main(["versions", "--store", store.uri, "-o", "json"]) == 0
    rows = {r["version"]: r for r in json.loads(capfd.readouterr().out)["versions"]}
    assert rows["v1"]["scorer"] == MAXSIM
    assert rows["v1"]["served"] == {"search": "adaptive (4 rounds)", "budget": 100}
    assert rows["v1"]["recall"] == {"1@100": 0.97, "10@100": 0.9123}
    assert rows["v1"]["objective"] == "10@100"
    assert (rows["v2"]["served"], rows["v2"]["objective"]) == (None, "10@200")
    assert (rows["bare"]["scorer"], rows["bare"]["recall"], rows["bare"]["objective"]) == (
        None, {}, None)
    assert main(["versions", "--store", store.uri]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert re.match(r"VERSION +CREATED_AT +SCORER +SERVES +RECALL +FILES +SIZE", lines[0].strip())
    (v1,) = [x for x in lines if " v1 " in x]
    assert v1.startswith("*") and "maxsim-minilm aaaaaaaa" in v1
    assert "adaptive (4 rounds) @100" in v1 and "top-10@100 0.9123" in v1
    (v2,) = [x for x in lines if " v2 " in x]
    assert "cross-encoder bbbbbbbb" in v2 and "top-10@200 0.5000" in v2


def test_the_report_compares_only_versions_of_the_same_scorer() -> None:
    """A published version of another scorer is named, and why its recall is not compared,
    in report.json, the page and the terminal alike."""
    from curindex.manifest import Manifest
    from curindex.report import render_report, summary_table
    from test_report import current_doc, published_doc

    other = published_doc()
    other["scorer"] = {"kind": "cross-encoder", "fingerprint": "c0ffee"}
    now, then = Manifest.from_dict(current_doc()), Manifest.from_dict(other)
    files = render_report(now, previous=then)
    c = json.loads(files["report.json"])["comparison"]
    assert c["comparable"] is False and c["previous_version"] == then.version
    assert "recall" not in c and "another scorer (cross-encoder c0ffee" in c["reason"]
    page = files["report.html"].decode()
    assert f"Not compared with published version {then.version}: the published version was " \
           "built with another scorer" in page
    text = summary_table(now, previous=then)
    assert f"not compared with published version {then.version}" in text
    assert "0.9531" not in text  # the other model's recall is nowhere
    same = json.loads(render_report(now, previous=Manifest.from_dict(
        {**other, "scorer": current_doc()["scorer"]}))["report.json"])["comparison"]
    assert same["comparable"] is True and same["recall"]
    # the terminal shows the comparison a stored report recorded, as its page does
    assert "not compared with published version" in summary_table(
        now, recorded=json.loads(files["report.json"]))


def test_reports_go_to_this_users_own_folder(tmp_path, monkeypatch) -> None:
    import tempfile

    from curindex.cli.report_cmd import user_report_dir
    from curindex.errors import CurIndexError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    got = user_report_dir()
    base = tmp_path / f"curindex-{os.getuid()}"
    assert got == base / "reports" and (base.stat().st_mode & 0o777) == 0o700
    base.chmod(0o755)  # readable by others: not a private folder
    with pytest.raises(CurIndexError, match="is not this user's private folder"):
        user_report_dir()
    base.rmdir()
    base.symlink_to(tmp_path)
    with pytest.raises(CurIndexError, match="is not this user's private folder"):
        user_report_dir()
