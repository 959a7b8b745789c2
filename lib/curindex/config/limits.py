"""Bounds of the numeric settings of a build config, checked when a config is loaded (and
when a reader checks the settings a manifest recorded). Pure: no curindex import."""

from __future__ import annotations

from typing import Any

MAX_SHARDS = 65_536  # shard numbers fill 23 bits of a faiss label; file names have 5 digits
MAX_CHUNKS = 100_000
# Inclusive bounds of every integer setting, checked at load; a list setting's every element,
# and at most MAX_LIST_ITEMS of them. Far beyond any real build, they keep a value from
# overflowing a label, a file name, a seed or an allocation (n_queries of 2^63 - 1 once made
# the plan allocate a list of that many queries).
INT_BOUNDS: dict[tuple[str, str], tuple[int, int]] = {
    ("anchors", "n_queries"): (1, 100_000),
    ("anchors", "n_items"): (1, 100_000),
    ("anchors", "n_test"): (0, 100_000),
    ("anchors", "seed"): (0, 2**32 - 1),  # numpy's and scikit-learn's seeds
    ("anchors", "synthetic_queries"): (0, 100_000),
    ("scorer", "batch_size"): (1, 65_536),
    ("scorer", "max_query_tokens"): (2, 65_536),  # and at most the model's positions
    ("scorer", "max_item_tokens"): (2, 65_536),
    ("scorer", "threads"): (0, 1024),
    ("factorize", "min_rank"): (1, 100_000),
    ("index", "num_shards"): (1, MAX_SHARDS),
    ("index", "nprobe"): (1, 1 << 20),
    ("index", "ef_search"): (1, 1 << 16),
    ("validate", "ks"): (1, 100_000),
    ("validate", "budgets"): (1, 1_000_000),
    ("validate", "rounds"): (2, 100),
    ("validate", "seed_sizes"): (1, 100_000),
    ("validate", "pool_depth"): (0, 1_000_000),
    ("validate", "audit_items"): (0, 1_000_000),
    ("validate", "synthetic_tuning"): (0, 100_000),
    ("sparse", "neighbours"): (0, 100_000),
    ("sparse", "random_items"): (0, 100_000),
    ("sparse", "log_queries"): (0, 100_000_000),
    ("sparse", "synthetic_queries"): (0, 100_000_000),
    ("sparse", "hidden"): (1, 65_536),
    ("sparse", "epochs"): (1, 100_000),
    ("sparse", "patience"): (1, 100_000),
    ("sparse", "batch_size"): (1, 100_000_000),
    ("sparse", "seed"): (0, 2**32 - 1),
    ("spark", "score_partitions"): (0, MAX_CHUNKS),
    ("spark", "block_items"): (1, 1_000_000),
}
MAX_LIST_ITEMS = 64  # ks, budgets, rounds, seed_sizes, tune_rconds: each a pass of validation
_FIGURE_DIGITS = 7  # "k@budget" names: k and budget within the bounds above


def bound_problems(section: str, values: Any) -> list[tuple[str, str]]:
    """(key, problem) for each integer setting of `section` outside `INT_BOUNDS`."""
    out = []
    for (sec, key), (lo, hi) in INT_BOUNDS.items():
        if sec != section:
            continue
        value = getattr(values, key)
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
            out.append((key, f"must list at most {MAX_LIST_ITEMS} values, got {len(value)}"))
        elif not all(lo <= v <= hi for v in items):
            each = "every value " if isinstance(value, list) else ""
            out.append((key, f"{each}must be in [{lo:,}, {hi:,}], got {value}"))
    return out


def figure_ok(name: str) -> bool:
    """Whether `name` reads "k@budget" with 0 < k < budget, both of a sane length."""
    k, _, b = name.partition("@")
    return (k.isdigit() and b.isdigit() and len(k) <= _FIGURE_DIGITS
            and len(b) <= _FIGURE_DIGITS and 0 < int(k) < int(b))
