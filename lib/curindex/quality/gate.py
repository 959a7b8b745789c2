"""The quality gate: a version whose measured recall is under its config's thresholds is kept
but cannot be published. Spark-free, so publishing and the CLI can apply it."""

from __future__ import annotations

from typing import Any

from curindex.errors import QualityGateError
from curindex.quality.figures import Figure


def gate_failures(recall: dict[str, float], min_recall: dict[str, float]) -> list[str]:
    """Readable failures of the gate, e.g. "Top-10-Recall@200 = 0.8100 < 0.9000"."""
    out = []
    for figure, floor in sorted((Figure.parse(n), v) for n, v in min_recall.items()):
        value = recall.get(str(figure))
        if value is None:
            out.append(f"{figure.label} was not measured (add {figure.k} to ks and "
                       f"{figure.budget} to budgets; budgets must be smaller than the corpus)")
        elif value < floor:
            out.append(f"{figure.label} = {value:.4f} < {floor:.4f}")
    return out


def lift_failures(recall: dict[str, float], baseline: dict[str, float],
                  min_lift: float | None) -> list[str]:
    """Readable failures of the optional rule that the served search stays at least
    `min_lift` above the bi-encoder baseline at every figure both were measured at."""
    if min_lift is None:
        return []
    if not baseline:
        return ["min_lift_over_baseline is set, but the bi-encoder baseline was not measured"]
    out = []
    for figure, value in sorted((Figure.parse(n), v) for n, v in recall.items()):
        base = baseline.get(str(figure))
        if base is not None and value - base < min_lift:
            out.append(f"{figure.label}: served {value:.4f} - bi-encoder baseline {base:.4f} = "
                       f"{value - base:+.4f} < min_lift_over_baseline {min_lift:+.4f}")
    return out


def check_publishable(manifest: Any) -> None:
    """Raise QualityGateError, with the figures, when a version failed its recall thresholds.
    `manifest`: a ``curindex.manifest.Manifest``, or a manifest document (its validation
    section is read, typed; a document without one measured nothing and passes)."""
    from curindex.manifest import Manifest, Validation, load_section

    if isinstance(manifest, Manifest):
        version, v = manifest.version, manifest.validation
    else:
        version, raw = manifest.get("version"), manifest.get("validation")
        if raw is None:
            return
        v = load_section(Validation, raw, f"version {version}: manifest.validation")
    if not v.passed:
        raise QualityGateError(
            f"version {version} is below its recall thresholds and cannot be published: "
            f"{'; '.join(v.failures)}"
        )
