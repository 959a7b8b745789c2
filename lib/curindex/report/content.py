"""The report's figures from a manifest, as one JSON-ready dict (``report.json``): every number
the page and the terminal table show comes from here, and every one of them from the manifest.
"""

from __future__ import annotations

from typing import Any

from curindex.manifest import Manifest, SearchInfo
from curindex.report.compare import comparison, total_bytes
from curindex.report.series import throughput
from curindex.report.served import (
    LEGACY_NOTE,
    describe,
    gate_configured,
    gate_verdict,
    served_search,
)

REPORT_FORMAT = 2


def report_figures(manifest: Manifest, *, previous: Manifest | None = None) -> dict[str, Any]:
    """The figures of the report. `previous`: the currently published version, compared with
    (None: there is none, and the comparison says so)."""
    v, anchors, index = manifest.validation, manifest.anchors, manifest.index
    doc = manifest.to_dict()
    shard_items = [s.n_items for s in index.shards]
    pairs_per_item = anchors.n_queries + anchors.n_test
    return {
        "report_format": REPORT_FORMAT,
        "version": manifest.version,
        "created_at": manifest.created_at,
        "headline": {
            "items": manifest.counts.items,
            "items_truncated": manifest.counts.items_truncated,
            "k_q": anchors.n_queries,
            "k_i": anchors.n_items,
            "n_tune": anchors.n_tune,
            "scorer": manifest.scorer.kind,
            "scorer_fingerprint": manifest.scorer.fingerprint,
            "index": index.factory,
            "shard_items_min": min(shard_items, default=None),
            "shard_items_max": max(shard_items, default=None),
            "total_bytes": total_bytes(manifest),
        },
        "comparison": comparison(manifest, previous),
        "search": search_section(manifest.search),
        "methods": method_rows(manifest),
        "recall": {
            "served": dict(v.recall),
            "exact_search": dict(v.recall_exact_search),
            "index_vs_exact": dict(v.index_recall_vs_exact),
            "baseline": v.baseline and {"name": v.baseline.name,
                                        "recall": dict(v.baseline.recall)},
        },
        "gate": gate_section(manifest),
        "shards": shard_rows(manifest),
        "score_throughput": throughput_section(manifest, pairs_per_item),
        "counts": doc["counts"],
        "timings_s": dict(manifest.timings_s),
        "timings_total_s": sum(manifest.timings_s.values()),
        "factorization": doc["factorization"],
        "incremental": doc["incremental"],
        "manifest": {k: val for k, val in doc.items() if k != "files"},
    }


def search_section(search: SearchInfo | None) -> dict[str, Any]:
    sel = search.selection if search is not None else None
    return {
        "served": served_search(search),
        "note": LEGACY_NOTE if search is None else None,
        "selection": None if sel is None else {
            "objective": list(sel.objective),
            "n_tune": sel.n_tune,
            "synthetic": sel.synthetic,
            "reason": sel.reason,
            "candidates": [{"name": describe(c.method, c.rounds, c.seed_size),
                            "method": c.method, "rounds": c.rounds, "seed_size": c.seed_size,
                            "objective": c.objective, "below_best": c.below_best,
                            "below_best_se": c.below_best_se,
                            "measurably_worse": c.measurably_worse}
                           for c in sel.candidates],
        },
    }


def method_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """Every method the version supports with its figures on the reporting queries (the
    served one marked), the bi-encoder baseline (its own row unless a bi-rerank row holds
    the same figures), and plain CUR with exact search (approximate indexes)."""
    v, search = manifest.validation, manifest.search
    base = v.baseline
    rows = [_row(describe(m.method, m.rounds, m.seed_size), "method", m.method, m.rounds,
                 m.seed_size, m.served, dict(m.recall),
                 base is not None and m.method == "bi-rerank" and m.recall == base.recall)
            for m in (search.methods if search is not None else ())]
    if not any(r["served"] for r in rows):  # format 2, or a build that listed no methods
        s = served_search(search)
        rows.insert(0, _row(s["name"], "method", s["method"], s["rounds"], s["seed_size"],
                            True, dict(v.recall), False))
    if base is not None and not any(r["baseline"] for r in rows):
        rows.append(_row(f"{base.name} baseline", "baseline", None, None, None, False,
                         dict(base.recall), True))
    if v.recall_exact_search and v.recall_exact_search != v.recall:
        rows.append(_row("cur, exact search", "exact-search", "cur", 1, 0, False,
                         dict(v.recall_exact_search), False))
    return rows


def _row(name: str, kind: str, method: str | None, rounds: int | None, seed_size: int | None,
         served: bool, recall: dict[str, float], baseline: bool) -> dict[str, Any]:
    return {"name": name, "kind": kind, "method": method, "rounds": rounds,
            "seed_size": seed_size, "served": served, "baseline": baseline, "recall": recall}


def gate_section(manifest: Manifest) -> dict[str, Any]:
    """The quality gate: its thresholds, verdict and failures."""
    v = manifest.validation
    return {"configured": gate_configured(v), "verdict": gate_verdict(v),
            "measured": bool(v.recall),
            "passed": v.passed, "min_recall": dict(v.min_recall),
            "min_lift_over_baseline": v.min_lift_over_baseline,
            "failures": list(v.failures), "n_test": v.n_test}


def shard_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """Per shard: items, and the bytes of each of its files, from the version's own files or
    the older version it shares them from (bytes None when a file's size is not recorded)."""
    out = []
    for s in manifest.index.shards:
        parts = {"vectors": s.index, "ids": s.ids, "extra": s.extra_index, "h": s.h_index,
                 "bi": s.bi_index, "scores": s.scores}
        sizes: dict[str, int | None] = {}
        shared = set()
        for part, path in parts.items():
            if path is None:
                continue
            if path in manifest.files:
                sizes[part] = manifest.files[path].size
            elif path in manifest.references:
                sizes[part] = manifest.references[path].size
                shared.add(manifest.references[path].version)
            else:
                sizes[part] = None
        unknown = None in sizes.values()
        out.append({"shard": s.shard, "n_items": s.n_items, "file_bytes": sizes,
                    "bytes": None if unknown else sum(x for x in sizes.values() if x is not None),
                    "shared_from": sorted(shared)})
    return out


def throughput_section(manifest: Manifest, pairs_per_item: int) -> dict[str, Any]:
    """The score stage's progress samples, the rate between them, and the mean rate up to
    the last sample (None without samples)."""
    samples = [(p.seconds, p.items) for p in manifest.score_progress]
    intervals = throughput(samples, pairs_per_item)
    seconds = sum(i.end_s - i.start_s for i in intervals)
    items = sum(i.items for i in intervals)
    mean = items / seconds if seconds > 0 else None
    return {"pairs_per_item": pairs_per_item,
            "samples": [{"seconds": t, "items": n} for t, n in samples],
            "intervals": [i._asdict() for i in intervals],
            "mean_items_per_s": mean,
            "mean_pairs_per_s": None if mean is None else mean * pairs_per_item}
