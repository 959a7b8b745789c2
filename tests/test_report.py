"""The build report rendered from hand-made manifests (no Spark, no store)."""

from __future__ import annotations

import copy
import io
import json
import sys

import pytest

from curindex.errors import IntegrityError
from curindex.manifest import Manifest
from curindex.report import render_report, summary_table

mpl_image = pytest.importorskip("matplotlib.image")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLANTED = "<script>alert(1)</script>"


def manifest_doc() -> dict:
    recall = {"1@100": 0.98, "10@100": 0.9012, "10@200": 0.9531, "100@200": 0.7007,
              "100@500": 0.9304}
    return {
        "format": 2,
        "curindex_version": "0.1.0",
        "config_source": "conf/x.toml",
        "version": "20261123-185500-ab12",
        "created_at": "2026-11-23T18:55:00Z",
        "config": {"anchors": {"n_items": 50, "n_queries": 200},
                   "index": {"factory": "IVF64,Flat", "num_shards": 4},
                   "items": {"path": f"/data/{PLANTED}.parquet"},
                   "queries": {"path": "/data/q.jsonl"}},
        "scorer": {"kind": "maxsim-minilm", "fingerprint": "f00dfeed"},
        "anchors": {"n_queries": 200, "n_items": 50, "n_test": 50, "seed": 0,
                    "strategy": "random", "items_file": "anchors/items.parquet",
                    "queries_file": "anchors/queries.parquet",
                    "scores_file": "anchors/scores.npy"},
        "counts": {"items": 123456, "queries_available": 5000, "items_truncated": 17,
                   "item_max_chars": 4321, "shards": 4, "pairs_scored": 30864000,
                   "pairs_scored_this_run": 30864000},
        "factorization": {"rcond": 1e-3, "effective_rank": 27,
                          "singular_values": [10.0 / 1.3**i for i in range(50)],
                          "condition_number_kept": 171.2},
        "index": {"factory": "IVF64,Flat", "dim": 50, "metric": "inner_product",
                  "label_shift": 40, "g_file": "G.npy", "bytes": 24_000_000, "shards": [
            {"shard": s, "n_items": 30000 + 100 * s, "index": f"shards/shard-{s:05d}.faiss",
             "ids": f"shards/ids-{s:05d}.parquet"} for s in range(4)]},
        "validation": {
            "recall": recall,
            "recall_exact_search": {**recall, "100@500": 0.9411},
            "index_recall_vs_exact": {"100": 0.991, "200": 0.987, "500": 0.976},
            "baseline": {"name": "bi-encoder", "recall": {
                "1@100": 0.9123, "10@100": 0.8234, "10@200": 0.8877, "100@200": 0.6345,
                "100@500": 0.8456}},
            "min_recall": {"10@200": 0.95, "100@500": 0.95},
            "passed": False,
            "failures": ["Top-100-Recall@500 = 0.9304 < 0.9500"],
            "n_test": 50,
        },
        "timings_s": {"prepare": 3.2, "score": 812.5, "factorize": 4.1, "write_shards": 61.0,
                      "validate": 33.3},
        "files": {"G.npy": {"size": 10, "sha256": "0" * 64}},
    }


def manifest(doc: dict | None = None) -> Manifest:
    return Manifest.from_dict(manifest_doc() if doc is None else doc)


FIGURES = ["0.9800", "0.9012", "0.9531", "0.7007", "0.9304",  # ours
           "0.9411",  # exact search
           "0.9123", "0.8234", "0.8877", "0.6345", "0.8456"]  # baseline


@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    return render_report(manifest())


def test_json_round_trips_with_the_figures(rendered):
    doc = json.loads(rendered["report.json"])
    m = manifest().to_dict()
    assert doc["recall"]["ours"] == m["validation"]["recall"]
    assert doc["recall"]["exact_search"]["100@500"] == 0.9411
    assert doc["recall"]["baseline"] == m["validation"]["baseline"]
    assert doc["recall"]["index_vs_exact"] == m["validation"]["index_recall_vs_exact"]
    assert doc["gate"] == {"measured": True, "passed": False, "n_test": 50,
                           "min_recall": m["validation"]["min_recall"],
                           "failures": m["validation"]["failures"]}
    assert doc["counts"] == m["counts"] and doc["timings_s"] == m["timings_s"]
    assert doc["factorization"] == m["factorization"]
    assert doc["headline"]["k_i"] == 50 and doc["headline"]["index"] == "IVF64,Flat"
    del m["files"]
    assert doc["manifest"] == m


def test_html_holds_the_figures_and_escapes_manifest_strings(rendered):
    page = rendered["report.html"].decode()
    for x in [*FIGURES, "20261123-185500-ab12", "123,456", "maxsim-minilm", "IVF64,Flat",
              "bi-encoder", "FAILED", "Top-100-Recall@500 = 0.9304 &lt; 0.9500", "812.5",
              "write_shards", "27 of 50", "0.9910", "0.9760"]:
        assert x in page, x
    assert "<script" not in page
    assert html_escaped(PLANTED) in page
    assert page.count("data:image/png;base64,") == 2
    assert page.count('class="gate') == 2  # the two thresholded figures


def html_escaped(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.mark.parametrize("name", ["recall.png", "singular_values.png"])
def test_plots_are_pngs(rendered, name):
    png = rendered[name]
    assert png.startswith(PNG_MAGIC)
    img = mpl_image.imread(io.BytesIO(png), format="png")
    height, width = img.shape[:2]
    assert 300 <= height <= 1000 and 500 <= width <= 1400


def test_rendering_is_deterministic(rendered):
    assert render_report(manifest(copy.deepcopy(manifest_doc()))) == rendered


def test_summary_table_lists_every_figure():
    text = summary_table(manifest())
    for x in [*FIGURES, "0.9500", "0.9910", "0.9870", "0.9760", "FAILED",
              "Top-100-Recall@500 = 0.9304 < 0.9500", "123,456", "30,864,000", "812.5", "914.1",
              "IVF64,Flat"]:
        assert x in text, x


def test_manifest_without_validation_or_baseline_renders():
    m = manifest_doc()
    m["validation"] = {"n_test": 0, "min_recall": {}, "recall": {}, "passed": True,
                       "failures": []}
    m["timings_s"], m["files"] = {}, {}
    out = render_report(manifest(m))
    assert set(out) == {"report.json", "report.html", "singular_values.png"}
    page = out["report.html"].decode()
    assert "not measured" in page and "Recall was not measured" in page
    assert "not measured" in summary_table(manifest(m))
    m = manifest_doc()
    m["validation"]["baseline"] = None
    m["validation"].pop("recall_exact_search")
    out = render_report(manifest(m))
    assert "bi-encoder" not in out["report.html"].decode()
    assert json.loads(out["report.json"])["recall"]["baseline"] is None
    with pytest.raises(IntegrityError, match="missing field"):
        manifest({"format": 2})


def test_without_matplotlib_the_page_says_so(monkeypatch):
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    out = render_report(manifest())
    assert set(out) == {"report.json", "report.html"}
    assert "matplotlib is not installed" in out["report.html"].decode()
