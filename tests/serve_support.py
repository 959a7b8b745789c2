"""Two versions of one store, built once per test run for the serving tests: each test module
gets its own copy of the store (copies are independent: a version's files are addressed from
the store's root), so one module's publishes and rollbacks never reach another's.

Version "va" is built over a corpus whose item ids start with "a", "vb" over one whose ids start
with "b" (an answer's ids tell which version gave it); "va" is published, "vb" only committed.
The scorer is the test scorer `scorers:failing` (the toy scorer, failing for queries with the
word "explode"); the versions serve plain CUR and can run adaptive search, which their builds
validated at 3 rounds only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from support import make_texts, tiny_config, write_corpus

SCORER_TARGET = "scorers:failing"
ROUNDS = 3  # the one number of adaptive rounds the builds validate ([validate] rounds)
PREFIX = {"va": "a", "vb": "b"}
_BUILT: dict[str, Path] = {}


def built_store(spark, tmp_path_factory) -> Path:
    """The store folder holding "va" (published) and "vb", built on first use."""
    if "store" not in _BUILT:
        from curindex.config import config_from_dict
        from curindex.pipeline import run_build

        root = tmp_path_factory.mktemp("serve-builds")
        for version, prefix in PREFIX.items():
            corpus = write_corpus(root / version, make_texts(150, seed=len(prefix) + ord(prefix),
                                                             prefix=prefix),
                                  make_texts(70, seed=2, prefix="q", min_words=2, max_words=5))
            raw = tiny_config(corpus, store=root / "store",
                              scorer={"kind": "callable", "target": SCORER_TARGET,
                                      "options": {"dim": "8"}},
                              index={"methods": ["cur", "adaptive"]},
                              validate={"rounds": [ROUNDS], "budgets": [20, 40],
                                        "objective": "10@40"})
            run_build(spark, config_from_dict(raw), version=version, publish=version == "va")
        _BUILT["store"] = root / "store"
    return _BUILT["store"]


def store_copy(spark, tmp_path_factory, name: str) -> str:
    """A copy of the built store for one test module: its URI."""
    dest = tmp_path_factory.mktemp(name) / "store"
    shutil.copytree(built_store(spark, tmp_path_factory), dest, symlinks=True)
    return str(dest)


QUERIES = ["river data", "market price", "music piano song", "energy solar wind",
           "search index vector", "city bank"]
