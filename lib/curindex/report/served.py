"""The served search and the gate's verdict of one manifest, named the same way wherever the
report shows them (its figures, its comparison with the published version, the terminal)."""

from __future__ import annotations

from typing import Any

from curindex.manifest import SearchInfo, Validation
from curindex.search.methods import SearchSpec

# What a version built before builds chose their search serves (manifest format 2 and older).
LEGACY_SEARCH = {"method": "cur", "rounds": 1, "seed": "anchors", "seed_size": 0, "budget": 200}
LEGACY_NOTE = "built before builds chose their search"


def describe(method: str, rounds: int, seed_size: int) -> str:
    """A search's name ("bi-seeded (4 rounds, seed 50)"), also for a method this curindex
    does not know (a newer build's), which is named as recorded."""
    try:
        return SearchSpec(method, rounds, seed_size).describe()
    except ValueError:
        extra = [f"{rounds} rounds"] if rounds != 1 else []
        extra += [f"seed {seed_size}"] if seed_size else []
        return method + (f" ({', '.join(extra)})" if extra else "")


def served_search(search: SearchInfo | None) -> dict[str, Any]:
    """The served search as a dict with its name, and whether the build chose it."""
    d = search.default if search is not None else None
    fields = LEGACY_SEARCH if d is None else {
        "method": d.method, "rounds": d.rounds, "seed": d.seed, "seed_size": d.seed_size,
        "budget": d.budget}
    name = describe(fields["method"], fields["rounds"], fields["seed_size"])
    return {**fields, "name": name, "chosen_by_build": d is not None}



def gate_configured(v: Validation) -> bool:
    return bool(v.min_recall) or v.min_lift_over_baseline is not None


def gate_verdict(v: Validation) -> str:
    """"no gate configured" when no threshold is set (nothing was checked, so "PASSED" would
    claim too much), else "PASSED" or "FAILED"."""
    if not gate_configured(v):
        return "no gate configured"
    return "PASSED" if v.passed else "FAILED"
