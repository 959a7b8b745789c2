"""What the reader's checks cost: a shard's Arrow id map validated in full on open
(``search.reader.read_id_map``) beside opening it unchecked, and the nesting check of a large
JSON document (``store.io.loads``) beside parsing it, side by side in one run.

    .venv/bin/python bench/validate_cost.py [--rows 1000000] [--json-mb 60]

Prints one JSON object: seconds and anonymous memory (``RssAnon``; the mapped file's pages
are the kernel's to drop) of each, for an id map of ``--rows`` items with 100-character texts
and a manifest-like document of about ``--json-mb`` MB.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def rss_anon_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no RssAnon in /proc/self/status")


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(min(times), 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--json-mb", type=float, default=60.0)
    args = p.parse_args()
    import numpy as np
    import pyarrow as pa

    from curindex.search.reader import read_id_map
    from curindex.store.io import json_depth, loads

    out: dict = {"rows": args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ids-00000.arrow")
        n = args.rows
        texts = pa.array(np.char.add("item text of a hundred characters ... ",
                                     np.arange(n).astype("U62")).astype(object))
        table = pa.table({"label": pa.array(np.arange(n, dtype=np.int64)),
                          "item_id": pa.array(np.arange(n).astype(str).astype(object)),
                          "text": texts})
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        del table, texts
        out["id_map_mb"] = round(os.path.getsize(path) / 2**20, 1)
        before = rss_anon_mb()
        out["open_unchecked_s"] = best_of(3, lambda: pa.ipc.open_file(
            pa.memory_map(path)).read_all())
        out["open_validated_s"] = best_of(3, lambda: read_id_map(path))
        kept = read_id_map(path)
        out["rss_anon_mb_added_validated"] = round(rss_anon_mb() - before, 1)
        del kept

    shard = {"shard": 0, "n_items": 15, "index": "shards/shard-00000.faiss",
             "ids": "shards/ids-00000.arrow", "extra_index": None}
    count = int(args.json_mb * 2**20 / len(json.dumps(shard)))
    data = json.dumps({"index": {"shards": [shard] * count}}).encode()
    out["json_mb"] = round(len(data) / 2**20, 1)
    out["json_parse_s"] = best_of(3, lambda: json.loads(data))
    out["json_depth_check_s"] = best_of(3, lambda: json_depth(data))
    out["json_loads_checked_s"] = best_of(3, lambda: loads(data))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
