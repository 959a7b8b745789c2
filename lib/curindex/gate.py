"""The quality gate: a version whose measured recall is under its config's thresholds is kept
but cannot be published. Spark-free, so the store and the CLI can apply it."""

from __future__ import annotations

from curindex.errors import QualityGateError


def figure_order(name: str) -> tuple[int, int]:
    """Sort key of a "k@budget" figure name: by budget, then k."""
    k, b = name.split("@")
    return int(b), int(k)


def gate_failures(recall: dict[str, float], min_recall: dict[str, float]) -> list[str]:
    """Readable failures of the gate, e.g. "Top-10-Recall@200 = 0.8100 < 0.9000"."""
    out = []
    for name, floor in sorted(min_recall.items(), key=lambda kv: figure_order(kv[0])):
        value = recall.get(name)
        k, b = name.split("@")
        if value is None:
            out.append(f"Top-{k}-Recall@{b} was not measured (add {k} to ks and {b} to budgets; "
                       "budgets must be smaller than the corpus)")
        elif value < floor:
            out.append(f"Top-{k}-Recall@{b} = {value:.4f} < {floor:.4f}")
    return out


def check_publishable(manifest: dict) -> None:
    """Raise QualityGateError, with the figures, when a version failed its recall thresholds."""
    v = manifest.get("validation") or {}
    if v and not v.get("passed", False):
        raise QualityGateError(
            f"version {manifest.get('version')} is below its recall thresholds and cannot be "
            f"published: {'; '.join(v.get('failures', []))}"
        )
