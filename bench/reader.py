"""The reader's memory: anonymous memory (``RssAnon``) of a process that opens a version for
search, before and after opening it and after searching.

    .venv/bin/python bench/reader.py --store STORE [--queries 100] [--budget 200]

Run by ``bench/scale.py --reader`` on each version it builds (in a fresh process, so nothing
of the build is counted). Prints one JSON object: ``rss_anon_mb`` before importing curindex's
search, after ``Searcher.open`` and after the queries, ``rss_file_mb`` (memory-mapped shard
pages, which the kernel can drop) after the queries, and the items of the version. Shards
and id maps are memory-mapped, so the anonymous memory of an open version should not grow
with its item count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--scorer-target", default="scale:hash_scorer")
    args = p.parse_args()
    sys.path.insert(0, str(BENCH))
    import numpy as np

    from curindex.search import Searcher

    out = {"rss_anon_mb_imported": status_mb("RssAnon")}
    t0 = time.perf_counter()
    searcher = Searcher.open(args.store, scorer_target=args.scorer_target)
    out["open_s"] = round(time.perf_counter() - t0, 2)
    out["rss_anon_mb_opened"] = status_mb("RssAnon")
    rng = np.random.default_rng(0)
    words = "river data storm index query matrix forest signal engine planet".split()
    queries = [" ".join(rng.choice(words, 4)) for _ in range(args.queries)]
    t0 = time.perf_counter()
    for i in range(0, len(queries), 10):
        searcher.search(queries[i:i + 10], k=10, budget=args.budget)
    out["search_s"] = round(time.perf_counter() - t0, 2)
    out["rss_anon_mb_searched"] = status_mb("RssAnon")
    out["rss_file_mb_searched"] = status_mb("RssFile")
    out["n_items"] = searcher.n_items
    out["served"] = searcher.spec().describe()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
