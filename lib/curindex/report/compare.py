"""What changed since the currently published version: the served search and its figures,
items and bytes. A scheduled rebuild's reviewer reads this first."""

from __future__ import annotations

from typing import Any

from curindex.manifest import Manifest
from curindex.quality.figures import Figure
from curindex.report.served import gate_verdict, served_search


def total_bytes(manifest: Manifest) -> int | None:
    """The bytes of every file the version reads, its own and those it shares from older
    versions, its report left out (it describes the version; it is not part of the index).
    None when a shard's file has no recorded size (e.g. a manifest drafted before its files
    were listed): a partial sum would understate the size."""
    sizes = {p: f.size for p, f in manifest.references.items()}
    sizes.update({p: f.size for p, f in manifest.files.items()})
    if any(p not in sizes for s in manifest.index.shards for p in s.files()):
        return None
    return sum(n for p, n in sizes.items() if not p.startswith("report/"))


def comparison(manifest: Manifest, previous: Manifest | None) -> dict[str, Any] | None:
    """This version against `previous` (None: nothing to compare with). Every "delta" is
    now - then, None where either side is missing. Recall figures of two models say nothing
    about each other: when `previous` was built with another scorer (fingerprint) the
    comparison holds only the versions and why they are not compared (``comparable`` False)."""
    if previous is None:
        return None
    if previous.scorer.fingerprint != manifest.scorer.fingerprint:
        return {"previous_version": previous.version,
                "previous_created_at": previous.created_at, "comparable": False,
                "reason": f"the published version was built with another scorer "
                          f"({previous.scorer.kind} {previous.scorer.fingerprint}; this "
                          f"version: {manifest.scorer.kind} {manifest.scorer.fingerprint}): "
                          "the recall of two models is not compared"}
    then_s, now_s = served_search(previous.search), served_search(manifest.search)
    then_r, now_r = previous.validation.recall, manifest.validation.recall
    names = sorted(set(then_r) | set(now_r), key=Figure.parse)
    then_b, now_b = total_bytes(previous), total_bytes(manifest)
    return {
        "previous_version": previous.version,
        "previous_created_at": previous.created_at,
        "comparable": True,
        "served": {"then": then_s["name"], "now": now_s["name"],
                   "then_budget": then_s["budget"], "now_budget": now_s["budget"],
                   "changed": _key(then_s) != _key(now_s)},
        "recall": [{"figure": n, "then": then_r.get(n), "now": now_r.get(n),
                    "delta": _delta(then_r.get(n), now_r.get(n))} for n in names],
        "items": {"then": previous.counts.items, "now": manifest.counts.items,
                  "delta": manifest.counts.items - previous.counts.items},
        "total_bytes": {"then": then_b, "now": now_b, "delta": _delta(then_b, now_b)},
        "gate": {"then": gate_verdict(previous.validation),
                 "now": gate_verdict(manifest.validation)},
    }


def _key(s: dict[str, Any]) -> tuple:
    return s["method"], s["rounds"], s["seed_size"], s["budget"]


def _delta(then: Any, now: Any) -> Any:
    return None if then is None or now is None else now - then
