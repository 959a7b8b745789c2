"""The build report rendered from hand-made manifests (no Spark, no store).

Two manifests: `current_doc()`, format 3 (four methods, adaptive served, an incremental build
sharing shard 3), and `published_doc()`, format 2 (built before builds chose their search),
which also serves as the published version the current one is compared with. Expected values
are written out by hand, not computed from the fixture."""

from __future__ import annotations

import copy
import io
import json
import re
import sys

import pytest

from curindex.errors import IntegrityError
from curindex.manifest import Manifest
from curindex.report import recall_panels, render_report, report_figures, summary_table

mpl_image = pytest.importorskip("matplotlib.image")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLANTED = "<script>alert(1)</script>"
CURRENT, PUBLISHED = "20261123-185500-ab12", "20261116-020000-cd34"

BI_RERANK = {"1@25": 0.8811, "10@25": 0.6102, "1@50": 0.9023, "10@50": 0.7034,
             "1@100": 0.9145, "10@100": 0.7756, "1@200": 0.9267, "10@200": 0.8378,
             "1@500": 0.9389, "10@500": 0.8891}
CUR = {"1@100": 0.9601, "10@100": 0.8512, "1@200": 0.9723, "10@200": 0.9234,
       "1@500": 0.9845, "10@500": 0.9456}
ADAPTIVE = {"1@100": 0.9867, "10@100": 0.8925, "1@200": 0.9934, "10@200": 0.9648,
            "1@500": 0.9978, "10@500": 0.9689}
BI_SEEDED = {"1@100": 0.9871, "10@100": 0.8937, "1@200": 0.9941, "10@200": 0.9652,
             "1@500": 0.9981, "10@500": 0.9694}
# shard -> (vectors, ids, h, bi) bytes; shard 3 is shared from the published version
SHARD_FILES = {0: (6_000_000, 1_000_000, 2_000_000, 500_000),
               1: (6_100_000, 1_010_000, 2_020_000, 505_000),
               2: (6_200_000, 1_020_000, 2_040_000, 510_000),
               3: (5_900_000, 990_000, 1_980_000, 495_000)}


def _shard_paths(s: int) -> list[str]:
    return [f"shards/shard-{s:05d}.faiss", f"shards/ids-{s:05d}.parquet",
            f"shards/h-{s:05d}.faiss", f"shards/bi-{s:05d}.faiss"]


def current_doc() -> dict:
    files = {p: {"size": n, "sha256": "1" * 64} for s in (0, 1, 2)
             for p, n in zip(_shard_paths(s), SHARD_FILES[s], strict=True)}
    files |= {"G.npy": {"size": 40_000, "sha256": "2" * 64},
              "anchors/scores.npy": {"size": 72_000, "sha256": "3" * 64},
              "report/report.html": {"size": 123_456, "sha256": "4" * 64}}
    refs = {p: {"version": PUBLISHED, "size": n, "sha256": "5" * 64}
            for p, n in zip(_shard_paths(3), SHARD_FILES[3], strict=True)}
    row = {"rounds": 1, "seed_size": 0, "served": False}
    return {
        "format": 3, "curindex_version": "0.2.0", "config_source": "conf/x.toml",
        "version": CURRENT, "created_at": "2026-11-23T18:55:00.123456+00:00",
        "config": {"anchors": {"n_items": 50, "n_queries": 200, "n_test": 90},
                   "index": {"factory": "IVF64,Flat", "num_shards": 4, "encoding": "float16",
                             "methods": ["bi-rerank", "cur", "adaptive", "bi-seeded"]},
                   "items": {"path": f"/data/{PLANTED}.parquet"},
                   "queries": {"path": "/data/q.jsonl"},
                   "validate": {"ks": [1, 10], "budgets": [25, 50, 100, 200, 500],
                                "min_recall": {"10@200": 0.96, "10@500": 0.97}}},
        "scorer": {"kind": "maxsim-minilm", "fingerprint": f"f00d{PLANTED}"},
        "anchors": {"n_queries": 200, "n_items": 50, "n_test": 90, "n_tune": 40, "seed": 0,
                    "strategy": "random", "items_file": "anchors/items.parquet",
                    "queries_file": "anchors/queries.parquet",
                    "scores_file": "anchors/scores.npy"},
        "counts": {"items": 125_000, "queries_available": 5000, "items_truncated": 29,
                   "item_max_chars": 4321, "shards": 4, "pairs_scored": 36_250_000,
                   "pairs_scored_this_run": 1_508_000},
        "factorization": {"rcond": 1e-3, "effective_rank": 27,
                          "singular_values": [10.0 / 1.3**i for i in range(50)],
                          "condition_number_kept": 171.2},
        "index": {"factory": "IVF64,Flat", "dim": 50, "metric": "inner_product",
                  "label_shift": 40, "g_file": "G.npy", "bytes": 21_330_000,
                  "extra_bytes": {"h": 6_060_000, "bi": 1_515_000}, "shards": [
                      {"shard": s, "n_items": n, "index": _shard_paths(s)[0],
                       "ids": _shard_paths(s)[1], "h_index": _shard_paths(s)[2],
                       "bi_index": _shard_paths(s)[3]}
                      for s, n in enumerate([31_000, 31_200, 31_400, 31_400])]},
        "validation": {
            "n_test": 50, "recall": dict(ADAPTIVE),
            "recall_exact_search": {**CUR, "10@500": 0.9501},
            "index_recall_vs_exact": {"100": 0.991, "200": 0.987, "500": 0.976},
            "baseline": {"name": "bi-encoder", "recall": dict(BI_RERANK)},
            "min_recall": {"10@200": 0.96, "10@500": 0.97}, "passed": False,
            "failures": ["Top-10-Recall@500 = 0.9689 < 0.9700"],
            "index": "IVF64,Flat", "min_lift_over_baseline": None,
        },
        "search": {
            "default": {"method": "adaptive", "rounds": 4, "seed": "anchors", "seed_size": 0,
                        "budget": 200},
            "methods": [
                {**row, "method": "bi-rerank", "recall": dict(BI_RERANK)},
                {**row, "method": "cur", "recall": dict(CUR)},
                {**row, "method": "adaptive", "rounds": 4, "recall": dict(ADAPTIVE),
                 "served": True},
                {**row, "method": "bi-seeded", "rounds": 4, "seed_size": 50,
                 "recall": dict(BI_SEEDED)}],
            "selection": {
                "objective": ["10@200"], "n_tune": 40, "tune_ids": ["q1", "q2"],
                "reason": f"adaptive (4 rounds) is simplest {PLANTED}",
                "candidates": [
                    {"method": "bi-rerank", "rounds": 1, "seed_size": 0, "objective": 0.8412,
                     "below_best": 0.0949, "below_best_se": 0.0121, "measurably_worse": True},
                    {"method": "cur", "rounds": 1, "seed_size": 0, "objective": 0.8867,
                     "below_best": 0.0494, "below_best_se": 0.0107, "measurably_worse": True},
                    {"method": "adaptive", "rounds": 4, "seed_size": 0, "objective": 0.935,
                     "below_best": 0.0011, "below_best_se": 0.0032,
                     "measurably_worse": False},
                    {"method": "bi-seeded", "rounds": 4, "seed_size": 50, "objective": 0.9361,
                     "below_best": 0.0, "below_best_se": 0.0, "measurably_worse": False}]},
        },
        "score_progress": [{"seconds": 5.0, "items": 1000}, {"seconds": 10.0, "items": 2600},
                           {"seconds": 15.0, "items": 4100}, {"seconds": 20.5, "items": 5200}],
        "incremental": {"base": PUBLISHED, "new": 5000, "changed": 120, "deleted": 4456,
                        "unchanged": 119_880, "touched_shards": [0, 1, 2],
                        "shards_written": [0, 1, 2], "shards_shared": [3]},
        "timings_s": {"prepare": 3.2, "score": 812.5, "factorize": 4.1, "write_shards": 61.0,
                      "validate": 33.3},
        "files": files,
        "references": refs,
    }


def published_doc() -> dict:
    """A format-2 manifest: built before builds chose their search (serves plain CUR)."""
    recall = {"1@100": 0.98, "10@100": 0.9012, "10@200": 0.9531, "100@200": 0.7007,
              "100@500": 0.9304}
    return {
        "format": 2, "curindex_version": "0.1.0", "config_source": "conf/x.toml",
        "version": PUBLISHED, "created_at": "2026-11-16T02:00:00Z",
        "config": {"anchors": {"n_items": 50, "n_queries": 200},
                   "index": {"factory": "IVF64,Flat", "num_shards": 4},
                   "items": {"path": f"/data/{PLANTED}.parquet"},
                   "queries": {"path": "/data/q.jsonl"}},
        # the same scorer as the current version: only then are their figures compared
        "scorer": {"kind": "maxsim-minilm", "fingerprint": f"f00d{PLANTED}"},
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
        "files": {"G.npy": {"size": 10, "sha256": "0" * 64},
                  **{p: {"size": n, "sha256": "0" * 64} for s in range(4) for p, n in
                     ((f"shards/shard-{s:05d}.faiss", 5_000_000),
                      (f"shards/ids-{s:05d}.parquet", 1_000_000))}},
    }


def manifest(doc: dict | None = None) -> Manifest:
    return Manifest.from_dict(current_doc() if doc is None else doc)


def published() -> Manifest:
    return Manifest.from_dict(published_doc())


CURRENT_FIGURES = [f"{v:.4f}" for v in [*BI_RERANK.values(), *CUR.values(), *ADAPTIVE.values(),
                                        *BI_SEEDED.values()]]
PUBLISHED_FIGURES = ["0.9800", "0.9012", "0.9531", "0.7007", "0.9304",  # served (plain CUR)
                     "0.9411",  # exact search
                     "0.9123", "0.8234", "0.8877", "0.6345", "0.8456"]  # baseline


@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    return render_report(manifest())


@pytest.fixture(scope="module")
def compared() -> dict[str, bytes]:
    return render_report(manifest(), previous=published())


def html_escaped(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_fixture_lists_every_figure_once():
    assert len(CURRENT_FIGURES) == 28 and len(set(CURRENT_FIGURES)) == 28


# -- report.json --

def test_json_holds_the_manifests_figures(rendered):
    doc = json.loads(rendered["report.json"])
    assert doc["report_format"] == 2 and doc["version"] == CURRENT
    assert doc["created_at"] == "2026-11-23T18:55:00.123456+00:00"
    assert [(r["name"], r["kind"], r["served"], r["baseline"]) for r in doc["methods"]] == [
        ("bi-rerank", "method", False, True), ("cur", "method", False, False),
        ("adaptive (4 rounds)", "method", True, False),
        ("bi-seeded (4 rounds, seed 50)", "method", False, False),
        ("cur, exact search", "exact-search", False, False)]
    assert [r["recall"] for r in doc["methods"]] == [
        BI_RERANK, CUR, ADAPTIVE, BI_SEEDED, {**CUR, "10@500": 0.9501}]
    assert doc["recall"]["served"] == ADAPTIVE
    assert doc["recall"]["baseline"] == {"name": "bi-encoder", "recall": BI_RERANK}
    assert doc["recall"]["index_vs_exact"] == {"100": 0.991, "200": 0.987, "500": 0.976}
    assert doc["search"]["served"] == {
        "method": "adaptive", "rounds": 4, "seed": "anchors", "seed_size": 0, "budget": 200,
        "name": "adaptive (4 rounds)", "chosen_by_build": True}
    assert doc["search"]["note"] is None
    sel = doc["search"]["selection"]
    assert sel["objective"] == ["10@200"] and sel["n_tune"] == 40
    assert sel["reason"] == f"adaptive (4 rounds) is simplest {PLANTED}"
    assert [(c["name"], c["objective"], c["measurably_worse"]) for c in sel["candidates"]] == [
        ("bi-rerank", 0.8412, True), ("cur", 0.8867, True), ("adaptive (4 rounds)", 0.935, False),
        ("bi-seeded (4 rounds, seed 50)", 0.9361, False)]
    assert doc["gate"] == {
        "configured": True, "verdict": "FAILED", "measured": True, "passed": False,
        "min_recall": {"10@200": 0.96, "10@500": 0.97}, "min_lift_over_baseline": None,
        "failures": ["Top-10-Recall@500 = 0.9689 < 0.9700"], "n_test": 50}
    assert doc["headline"]["items_truncated"] == 29 and doc["headline"]["k_i"] == 50
    assert doc["headline"]["total_bytes"] == 38_382_000  # report/ files left out
    assert doc["comparison"] is None
    m = manifest().to_dict()
    assert doc["counts"] == m["counts"] and doc["timings_s"] == m["timings_s"]
    assert doc["timings_total_s"] == pytest.approx(914.1)
    assert doc["factorization"] == m["factorization"]
    assert doc["incremental"] == m["incremental"]
    del m["files"]
    assert doc["manifest"] == m


def test_json_shard_bytes_from_files_and_references(rendered):
    shards = json.loads(rendered["report.json"])["shards"]
    assert [(s["shard"], s["n_items"], s["bytes"], s["shared_from"]) for s in shards] == [
        (0, 31_000, 9_500_000, []), (1, 31_200, 9_635_000, []), (2, 31_400, 9_770_000, []),
        (3, 31_400, 9_365_000, [PUBLISHED])]
    assert shards[1]["file_bytes"] == {"vectors": 6_100_000, "ids": 1_010_000, "h": 2_020_000,
                                       "bi": 505_000}


def test_json_score_throughput(rendered):
    tp = json.loads(rendered["report.json"])["score_throughput"]
    assert tp["pairs_per_item"] == 290  # 200 anchor queries + 90 test queries
    assert [(i["start_s"], i["end_s"], i["items"]) for i in tp["intervals"]] == [
        (0.0, 5.0, 1000), (5.0, 10.0, 1600), (10.0, 15.0, 1500), (15.0, 20.5, 1100)]
    assert [i["items_per_s"] for i in tp["intervals"]] == pytest.approx([200, 320, 300, 200])
    assert [i["pairs_per_s"] for i in tp["intervals"]] == pytest.approx(
        [58_000, 92_800, 87_000, 58_000])
    assert tp["mean_items_per_s"] == pytest.approx(5200 / 20.5)


# -- the page --

def test_page_holds_every_figure(rendered):
    page = rendered["report.html"].decode()
    for x in [*CURRENT_FIGURES, "0.9501", "0.9600", "0.9700", CURRENT,
              "created 2026-11-23T18:55:00.123456+00:00", "125,000", "maxsim-minilm",
              "IVF64,Flat", "FAILED", "Top-10-Recall@500 = 0.9689 &lt; 0.9700", "812.5",
              "914.1", "write_shards", "27 of 50", "0.9910", "0.9760",
              # truncation, shard bytes, total bytes, sharing
              "<td class=\"l\">29</td>", "9,500,000", "9,635,000", "9,770,000",
              "9,365,000 (8.9 MiB)", "38,382,000 (36.6 MiB)", PUBLISHED,
              # throughput: pairs per item, mean items/s and pairs/s
              "290", "253.7", "73,561", "200.0 / 320.0",
              # selection
              "Chosen on 40 tuning queries by the mean of Top-10-Recall@200",
              "0.8412", "0.8867", "0.9350", "0.9361", "0.0949", "0.0121",
              "No published version to compare with."]:
        assert x in page, x
    assert page.count("data:image/png;base64,") == 4
    assert page.count('class="gate') == 2  # the two thresholded figures of the served row
    assert "matplotlib is not installed" not in page


def test_page_marks_the_served_method(rendered):
    page = rendered["report.html"].decode()
    assert "serves <strong>adaptive (4 rounds)</strong> at budget 200." in page
    served_rows = re.findall(r'<tr class="served">(.*?)</tr>', page)
    # one per k table (1 and 10) and the selection's candidate row
    assert len(served_rows) == 3
    assert all("adaptive (4 rounds) (served)" in r for r in served_rows)
    k10 = page.split("<h3>Top-10-Recall</h3>")[1].split("</table>")[0]
    assert re.findall(r"<th>(\d+)</th>", k10) == ["25", "50", "100", "200", "500"]
    assert "bi-rerank = bi-encoder baseline" in k10 and "cur, exact search" in k10


def test_html_escapes_manifest_strings(rendered, compared):
    for out in (rendered, compared, render_report(published())):
        page = out["report.html"].decode()
        assert "<script" not in page
        assert html_escaped(PLANTED) in page
    page = rendered["report.html"].decode()
    assert html_escaped(f"adaptive (4 rounds) is simplest {PLANTED}") in page
    assert html_escaped(f"f00d{PLANTED}") in page


@pytest.mark.parametrize("name", ["recall.png", "singular_values.png", "stage_times.png",
                                  "score_throughput.png"])
def test_plots_are_pngs(rendered, name):
    png = rendered[name]
    assert png.startswith(PNG_MAGIC)
    img = mpl_image.imread(io.BytesIO(png), format="png")
    height, width = img.shape[:2]
    assert 250 <= height <= 1100 and 500 <= width <= 1400


def test_rendering_is_deterministic(rendered, compared):
    assert render_report(manifest(copy.deepcopy(current_doc()))) == rendered
    assert render_report(manifest(), previous=published()) == compared
    text = rendered["report.json"].decode()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


# -- the recall plot's series --

def test_recall_plot_has_a_line_per_method_and_the_baseline():
    f = report_figures(manifest())
    panels = recall_panels(f["methods"], f["gate"]["min_recall"])
    assert [p.k for p in panels] == [1, 10]
    for p in panels:
        assert [(line.label, line.served, line.baseline) for line in p.lines] == [
            ("bi-rerank = bi-encoder baseline", False, True), ("cur", False, False),
            ("adaptive (4 rounds) (served)", True, False),
            ("bi-seeded (4 rounds, seed 50)", False, False)]
    k10 = panels[1]
    assert k10.lines[0].points == ((25, 0.6102), (50, 0.7034), (100, 0.7756), (200, 0.8378),
                                   (500, 0.8891))
    assert k10.lines[2].points == ((100, 0.8925), (200, 0.9648), (500, 0.9689))
    assert k10.thresholds == ((200, 0.96), (500, 0.97)) and panels[0].thresholds == ()


def test_baseline_gets_its_own_line_when_no_method_row_holds_it():
    doc = current_doc()
    doc["search"]["methods"] = [r for r in doc["search"]["methods"]
                                if r["method"] != "bi-rerank"]
    f = report_figures(manifest(doc))
    (_, k10) = recall_panels(f["methods"], f["gate"]["min_recall"])
    assert [(line.label, line.baseline) for line in k10.lines] == [
        ("cur", False), ("adaptive (4 rounds) (served)", False),
        ("bi-seeded (4 rounds, seed 50)", False), ("bi-encoder baseline", True)]
    assert k10.lines[3].points[0] == (25, 0.6102)


# -- the gate's verdict --

@pytest.mark.parametrize("min_recall, min_lift, passed, word", [
    ({}, None, True, "no gate configured"),
    ({"10@200": 0.9}, None, True, "PASSED"),
    ({"10@200": 0.99}, None, False, "FAILED"),
    ({}, 0.01, True, "PASSED"),  # only the lift rule is a gate too
])
def test_gate_verdict(min_recall, min_lift, passed, word):
    doc = current_doc()
    doc["validation"].update(min_recall=min_recall, min_lift_over_baseline=min_lift,
                             passed=passed, failures=[] if passed else ["below"])
    out = render_report(manifest(doc))
    page, text = out["report.html"].decode(), summary_table(manifest(doc))
    assert re.search(r"Quality gate: <span class=\"\w+\">([^<]*)</span>", page)[1] == word
    assert f"gate: {word}" in text
    assert json.loads(out["report.json"])["gate"]["verdict"] == word
    if word == "no gate configured":
        assert "PASSED" not in page and "PASSED" not in text
        assert 'class="gate' not in page
    if min_lift is not None:
        assert "min lift over the bi-encoder baseline" in page and "+0.0100" in page


# -- the comparison with the published version --

def test_comparison_with_the_published_version(compared):
    c = json.loads(compared["report.json"])["comparison"]
    assert c["previous_version"] == PUBLISHED
    assert c["served"] == {"then": "cur", "now": "adaptive (4 rounds)", "then_budget": 200,
                           "now_budget": 200, "changed": True}
    rows = {r["figure"]: r for r in c["recall"]}
    assert list(rows) == ["1@100", "10@100", "1@200", "10@200", "100@200", "1@500", "10@500",
                          "100@500"]
    assert rows["10@200"]["then"] == 0.9531 and rows["10@200"]["now"] == 0.9648
    assert rows["10@200"]["delta"] == pytest.approx(0.0117)
    assert rows["10@100"]["delta"] == pytest.approx(-0.0087)
    assert rows["100@500"] == {"figure": "100@500", "then": 0.9304, "now": None, "delta": None}
    assert c["items"] == {"then": 123_456, "now": 125_000, "delta": 1_544}
    assert c["total_bytes"] == {"then": 24_000_010, "now": 38_382_000, "delta": 14_381_990}
    assert c["gate"] == {"then": "FAILED", "now": "FAILED"}


def test_page_shows_the_comparison_first(compared):
    page = compared["report.html"].decode()
    section = page.split('<section class="compare">')[1].split("</section>")[0]
    assert page.index('<section class="compare">') < page.index("Quality gate")
    for x in ["Published version " + PUBLISHED, "created 2026-11-16T02:00:00Z",
              "cur at budget 200", "adaptive (4 rounds) at budget 200", "changed",
              "Top-10-Recall@200", "0.9531", "0.9648", "+0.0117", "-0.0087", "+0.0067",
              "123,456", "125,000", "+1,544", "24,000,010", "38,382,000", "+14,381,990"]:
        assert x in section, x
    assert "No published version" not in page


def test_summary_table_shows_the_comparison():
    text = summary_table(manifest(), previous=published())
    assert f"compared with published version {PUBLISHED}" in text
    assert re.search(r"served search +cur @200 +adaptive \(4 rounds\) @200 +changed", text)
    assert re.search(r"10@200 +0\.9531 +0\.9648 +\+0\.0117", text)
    assert re.search(r"items +123,456 +125,000 +\+1,544", text)
    assert "+14,381,990" in text
    assert "no published version to compare with" in summary_table(manifest())


# -- the terminal table --

def test_summary_table_sets_served_beside_baseline():
    text = summary_table(manifest())
    assert "served search: adaptive (4 rounds) at budget 200" in text
    assert "gate: FAILED\n  Top-10-Recall@500 = 0.9689 < 0.9700" in text
    assert re.search(r"served: adaptive \(4 rounds\) +bi-encoder +cur, exact search +lift +min",
                     text)
    # served, baseline, exact search, lift (served - baseline), threshold
    assert re.search(r"10@200 +0\.9648 +0\.8378 +0\.9234 +\+0\.1270 +0\.9600", text)
    assert re.search(r"1@25 +– +0\.8811 +– +– +–", text)
    for x in ["0.9910", "0.9760", "125,000", "36,250,000", "812.5", "914.1", "253.7 items/s",
              "73,561 pairs/s"]:
        assert x in text, x


# -- older and sparser manifests --

def test_format_2_manifest_renders_honestly():
    out = render_report(published())
    page = out["report.html"].decode()
    doc = json.loads(out["report.json"])
    assert doc["search"]["served"]["name"] == "cur"
    assert doc["search"]["note"] == "built before builds chose their search"
    assert "serves <strong>cur</strong> at budget 200 (built before builds chose their " \
           "search)." in page
    assert [(r["name"], r["served"], r["baseline"]) for r in doc["methods"]] == [
        ("cur", True, False), ("bi-encoder baseline", False, True),
        ("cur, exact search", False, False)]
    for x in [*PUBLISHED_FIGURES, PUBLISHED, "created 2026-11-16T02:00:00Z", "FAILED",
              "Top-100-Recall@500 = 0.9304 &lt; 0.9500", "24,000,010",
              "No progress samples recorded"]:
        assert x in page, x
    f = report_figures(published())
    panels = recall_panels(f["methods"], f["gate"]["min_recall"])
    assert [[line.label for line in p.lines] for p in panels] == [
        ["cur (served)", "bi-encoder baseline"]] * 3
    text = summary_table(published())
    assert "served search: cur at budget 200 (built before builds chose their search)" in text
    for x in [*PUBLISHED_FIGURES, "0.9500", "30,864,000", "914.1"]:
        assert x in text, x


def test_draft_without_file_list_says_sizes_are_not_recorded():
    doc = current_doc()
    doc["files"], doc["references"] = {}, {}
    out = render_report(manifest(doc), previous=published())
    f = json.loads(out["report.json"])
    assert f["headline"]["total_bytes"] is None
    assert {s["bytes"] for s in f["shards"]} == {None}
    assert f["comparison"]["total_bytes"] == {"then": 24_000_010, "now": None, "delta": None}
    assert "not recorded in this manifest" in out["report.html"].decode()


def test_manifest_without_validation_or_baseline_renders():
    m = published_doc()
    m["validation"] = {"n_test": 0, "min_recall": {}, "recall": {}, "passed": True,
                       "failures": []}
    m["timings_s"], m["files"] = {}, {}
    out = render_report(manifest(m))
    assert set(out) == {"report.json", "report.html", "singular_values.png"}
    page = out["report.html"].decode()
    assert "no gate configured" in page and "recall not measured" in page
    assert "Recall was not measured" in page
    assert "recall not measured" in summary_table(manifest(m))
    m = published_doc()
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
    page = out["report.html"].decode()
    assert "matplotlib is not installed" in page and "data:image/png" not in page
    assert "9,500,000" in page  # the tables are all there
