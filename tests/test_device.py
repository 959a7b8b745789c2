"""Where a scorer runs (`[scorer] device`), and models that cannot be silently wrong.

CI has no GPU: the device choice is a pure function, tested with the GPU addresses a Spark
task would see (``TaskContext.resources()["gpu"].addresses``) and the GPUs torch would see;
half precision is tested on the CPU against fp32, with the tolerance the int8 path meets.
"""

from __future__ import annotations

import numpy as np
import pytest

from curindex.config import ScorerConfig, config_from_dict
from curindex.errors import ConfigError, ScorerError
from curindex.scoring.base import build_scorer
from curindex.scoring.device import choose_device
from support import make_texts, save_bert_classifier, tiny_config

QUERIES = [t for _, t in make_texts(6, seed=9, prefix="q", min_words=2, max_words=6)]


@pytest.mark.parametrize(("setting", "gpus", "cuda_count", "want"), [
    ("auto", ["1"], 2, "cuda:1"),  # the GPU Spark assigned the task, not the first one
    ("cuda", ["1"], 4, "cuda:1"),
    ("auto", ["0"], 1, "cuda:0"),
    ("auto", ["1"], 0, "cpu"),  # torch sees no GPU (a CPU-only torch): the CPU
    ("auto", None, 0, "cpu"),
    ("auto", None, 2, "cuda:0"),  # no Spark assignment (a single-machine run)
    ("cpu", ["1"], 2, "cpu"),
    ("cuda:1", None, 2, "cuda:1"),
])
def test_the_device_is_the_gpu_the_task_was_assigned(setting, gpus, cuda_count, want):
    assert choose_device(setting, gpus=gpus, cuda_count=cuda_count) == want


@pytest.mark.parametrize(("setting", "gpus", "cuda_count", "problem"), [
    ("cuda", None, 0, "torch sees no GPU"),
    ("cuda", ["3"], 2, "Spark assigned this task GPU 3, but torch sees 2 GPU(s)"),
    ("cuda:2", None, 2, "torch sees 2 GPU(s)"),
    ("auto", ["gpu-a"], 2, "not a CUDA device number"),
    ("tpu", None, 2, "is not one of auto, cpu, cuda"),
])
def test_an_impossible_device_is_a_scorer_error(setting, gpus, cuda_count, problem):
    with pytest.raises(ScorerError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        choose_device(setting, gpus=gpus, cuda_count=cuda_count)


def test_the_config_names_a_bad_device(tiny_corpus):
    with pytest.raises(ConfigError, match=r"\[scorer\] device: must be auto, cpu, cuda"):
        config_from_dict(tiny_config(tiny_corpus, scorer={"device": "gpu"}))
    assert config_from_dict(tiny_config(tiny_corpus, scorer={"device": "cuda"})).scorer.device \
        == "cuda"


@pytest.fixture(scope="module")
def small_cross_encoder(tmp_path_factory):
    """A 4-layer random BERT classifier: deep enough for rounding to reach the scores."""
    return save_bert_classifier(tmp_path_factory.mktemp("ce-small"), hidden=64, layers=4,
                                heads=4, ffn=256)


def test_scorers_run_on_the_cpu_when_torch_sees_no_gpu(small_cross_encoder):
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    scorer = build_scorer(ScorerConfig(kind="cross-encoder", path=str(small_cross_encoder)))
    assert scorer.device.type == "cpu" and scorer.precision == "fp32"  # "auto": the CPU
    with pytest.raises(ScorerError, match="torch sees no GPU"):
        build_scorer(ScorerConfig(kind="cross-encoder", path=str(small_cross_encoder),
                                  device="cuda"))


def test_precision_defaults_to_fp16_on_a_gpu_and_refuses_int8_there():
    from curindex.scoring.cross_encoder import precision_option

    assert precision_option(ScorerConfig(), "cuda") == "fp16"
    assert precision_option(ScorerConfig(), "cpu") == "fp32"
    assert precision_option(ScorerConfig(options={"precision": "fp32"}), "cuda") == "fp32"
    with pytest.raises(ScorerError, match="int8' runs on CPUs only"):
        precision_option(ScorerConfig(options={"precision": "int8"}), "cuda")


def test_half_precision_keeps_the_fp32_ranking(small_cross_encoder):
    """fp16 (the GPU default) ranks each query's items as fp32 does, within the tolerance the
    int8 path meets (per-query Spearman > 0.99); computed here on the CPU."""
    from scipy.stats import spearmanr

    base = ScorerConfig(kind="cross-encoder", path=str(small_cross_encoder), batch_size=16,
                        device="cpu")
    items = [t for _, t in make_texts(120, seed=5, prefix="d")]
    want = build_scorer(base).score_block(QUERIES, items)
    half = build_scorer(ScorerConfig(**{**base.__dict__, "options": {"precision": "fp16"}}))
    got = half.score_block(QUERIES, items)
    assert got.dtype == np.float32 and not np.array_equal(got, want)  # it did run in fp16
    assert min(spearmanr(g, w).statistic for g, w in zip(got, want, strict=True)) > 0.99


def test_a_bi_encoder_configured_as_a_cross_encoder_is_refused():
    """all-MiniLM-L6-v2 has no classification head: transformers would initialise one at
    random; the error's own advice (label_index) does not get past it."""
    from curindex.scoring.models import default_minilm_path

    cfg = ScorerConfig(kind="cross-encoder", path=str(default_minilm_path()),
                       options={"label_index": "1"})
    with pytest.raises(ScorerError) as e:
        build_scorer(cfg)
    text = str(e.value)
    assert "classifier.bias, classifier.weight would be initialised at random" in text
    assert str(default_minilm_path()) in text and "maxsim-minilm" in text


def test_a_complete_checkpoint_loads(small_cross_encoder, tmp_path):
    """The same check passes a checkpoint that provides every weight, whichever loader reads
    it (a pytorch_model.bin goes to transformers)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    other = tmp_path / "bin"
    shutil.copytree(small_cross_encoder, other)
    state = load_file(str(other / "model.safetensors"))
    (other / "model.safetensors").unlink()
    torch.save(state, other / "pytorch_model.bin")
    want = build_scorer(ScorerConfig(kind="cross-encoder", path=str(small_cross_encoder)))
    got = build_scorer(ScorerConfig(kind="cross-encoder", path=str(other)))
    assert not got.cls_only or type(got.model).__module__.startswith("transformers")
    np.testing.assert_allclose(got.score_block(QUERIES, ["a b", "river ocean"]),
                               want.score_block(QUERIES, ["a b", "river ocean"]), atol=1e-4)


def test_a_spark_task_without_a_gpu_resolves_to_the_cpu():
    """Outside a task with GPU resources (here: no task at all), "auto" is the CPU when torch
    sees no GPU; the resolved device is what the worker's scorer cache is keyed by."""
    import torch

    from curindex.pipeline.score import task_scorer_config

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    assert task_scorer_config(ScorerConfig(device="auto")).device == "cpu"
    with pytest.raises(ScorerError, match="torch sees no GPU"):
        task_scorer_config(ScorerConfig(device="cuda"))
