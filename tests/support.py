"""Helpers shared by the tests: generated corpora, configs, and reading a built version."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from curindex.search.reader import read_id_map


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_corpus(root: Path, items: list[tuple[str, str]],
                 queries: list[tuple[str, str]]) -> dict:
    """(id, text) items and queries written as BEIR-style JSON lines under `root`: the corpus
    dict `tiny_config` reads (with the pairs themselves)."""
    return {"items": items, "queries": queries, "root": root,
            "items_path": write_jsonl(root / "items.jsonl",
                                      [{"_id": i, "title": "", "text": t} for i, t in items]),
            "queries_path": write_jsonl(root / "queries.jsonl",
                                        [{"_id": i, "text": t} for i, t in queries])}


WORDS = (
    "river mountain cloud data index search model query vector matrix forest ocean signal "
    "engine planet orbit carbon climate energy solar wind storm rain city market price "
    "bank music piano guitar song film actor stage novel poem language grammar python "
    "spark table "
).split()


def make_texts(n: int, *, seed: int, prefix: str, min_words: int = 4, max_words: int = 12):
    """n deterministic (id, text) pairs of random words."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(min_words, max_words + 1)))
        out.append((f"{prefix}{i:05d}", " ".join(words)))
    return out


def tiny_config(corpus: dict, *, store: Path | None = None, **sections) -> dict:
    """A build config dict over `corpus` using the toy scorer; sections override defaults."""
    cfg = {
        "items": {"path": str(corpus["items_path"])},
        "queries": {"path": str(corpus["queries_path"])},
        "anchors": {"n_queries": 40, "n_items": 12, "n_test": 10, "seed": 3},
        "scorer": {"kind": "toy", "options": {"dim": "8"}},
        "factorize": {"rcond": 1e-6},
        # 10 test queries leave 5 to tune on: no synthetic tuning queries unless a test asks
        "validate": {"synthetic_tuning": 0},
        # plain CUR alone unless a test asks for more: most tests are about the pipeline
        "index": {"num_shards": 3, "methods": ["cur"]},
        "store": {"uri": str(store or corpus["root"] / "store")},
        "spark": {"block_items": 32, "score_partitions": 4},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return cfg


def read_version_vectors(store, version: str) -> tuple[list[str], np.ndarray]:
    """(item ids, item vectors [n, k_i]) of every shard of a built flat-index version."""
    manifest = store.read_manifest(version)
    ids, vecs = [], []
    for s in manifest["index"]["shards"]:
        index = faiss.read_index(store.local_path(version, s["index"]))
        inner = faiss.downcast_index(index.index)
        labels = faiss.vector_to_array(index.id_map)
        table = read_id_map(store.local_path(version, s["ids"]))
        by_label = dict(zip(table.column("label").to_pylist(),
                            table.column("item_id").to_pylist(), strict=True))
        ids += [by_label[int(lab)] for lab in labels]
        vecs.append(inner.reconstruct_n(0, index.ntotal))
    return ids, np.concatenate(vecs)


def to_toml(d: dict) -> str:
    """A config dict as TOML (tables of scalars, lists and one level of inline tables)."""
    out = []
    for section, values in d.items():
        out.append(f"[{section}]")
        for k, v in values.items():
            if isinstance(v, dict):
                out.append(f"{k} = {{ " + ", ".join(f'"{a}" = {json.dumps(b)}'
                                                    for a, b in v.items()) + " }")
            else:
                out.append(f"{k} = {json.dumps(v)}")
    return "\n".join(out) + "\n"


def spark_submit(conf: Path, *args: str, master: str = "local[2]", wait: bool = True,
                 timeout: float = 600):
    """Run jobs/build_index.py with the venv's spark-submit, as a user would."""
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    exe = shutil.which("spark-submit", path=str(Path(sys.executable).parent))
    assert exe, "spark-submit is installed with pyspark"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [exe, "--master", master, str(root / "jobs" / "build_index.py"), "--conf", str(conf),
           *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def save_bert_classifier(d: Path, *, hidden: int, layers: int, heads: int, ffn: int,
                         seed: int = 0, **settings) -> Path:
    """A random (`seed`) 1-label BertForSequenceClassification saved to `d`, with the MiniLM
    (BERT uncased) tokenizer; `settings` go to its BertConfig."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from curindex.scoring.models import default_minilm_path

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=ffn, num_labels=1,
                        **settings)
    BertForSequenceClassification(config).eval().save_pretrained(d)
    src = default_minilm_path()
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    return d
