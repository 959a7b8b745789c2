"""Where a scorer's model runs: ``[scorer] device`` resolved against what this process sees.

``"cpu"``; ``"cuda"`` (a GPU, required); ``"auto"`` (a GPU when there is one, else the CPU);
``"cuda:N"`` (that GPU). In a Spark task the GPU is the one Spark assigned the task (its
``TaskContext.resources()["gpu"].addresses``, given here as `gpus`), so tasks that share an
executor never pile onto one GPU or spread one model over all of them; the cluster assigns GPUs
when it sets ``spark.executor.resource.gpu.amount`` and ``spark.task.resource.gpu.amount``
(with a discovery script). Without an assignment a GPU process uses ``cuda:0``.

On a GPU the model runs in half precision (fp16) unless ``options.precision`` says otherwise:
its scores rank as fp32's do within the tolerance the int8 path meets on CPUs (per-query
Spearman >= 0.99). int8 is a CPU kernel (fbgemm) and is refused on a GPU.

Pure: nothing here imports torch; callers pass ``torch.cuda.device_count()``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from curindex.errors import ScorerError

DEVICES = ("auto", "cpu", "cuda")
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def choose_device(setting: str, *, gpus: Sequence[str] | None, cuda_count: int) -> str:
    """The torch device string (``"cpu"`` or ``"cuda:N"``) for `setting` ("auto", "cpu",
    "cuda" or "cuda:N"), given the GPU addresses Spark assigned this task (`gpus`; None or
    empty outside a Spark task or without GPU scheduling) and the GPUs torch sees
    (`cuda_count`). "auto" falls back to the CPU when there is no usable GPU; "cuda" and
    "cuda:N" raise ScorerError naming the setting instead."""
    if not DEVICE_RE.match(setting):
        raise ScorerError(f"[scorer] device: {setting!r} is not one of auto, cpu, cuda, "
                          "cuda:N")
    if setting == "cpu":
        return "cpu"
    if setting.startswith("cuda:"):
        if int(setting[5:]) >= cuda_count:
            raise ScorerError(f"[scorer] device = {setting!r}: torch sees {cuda_count} GPU(s)")
        return setting
    if gpus:
        address = str(gpus[0]).strip()
        if not address.isdigit():
            raise ScorerError(f"[scorer] device = {setting!r}: Spark assigned this task GPU "
                              f"{address!r}, which is not a CUDA device number")
        if int(address) < cuda_count:
            return f"cuda:{address}"
        if setting == "cuda":
            raise ScorerError(f"[scorer] device = 'cuda': Spark assigned this task GPU "
                              f"{address}, but torch sees {cuda_count} GPU(s)")
        return "cpu"  # "auto": the GPU Spark named is not one this torch can use
    if cuda_count > 0:
        return "cuda:0"
    if setting == "cuda":
        raise ScorerError("[scorer] device = 'cuda': torch sees no GPU here (a CPU-only "
                          "torch, or no CUDA device); use device = \"auto\" to fall back to "
                          "the CPU")
    return "cpu"


def driver_device(setting: str) -> str:
    """The device setting for the same scorer on the driver (which encodes the queries, and
    measures the plan's sample) or a pre-flight check: the executors' GPUs are not the
    driver's, so "cuda" there means "a GPU when this machine has one"."""
    return "cpu" if setting == "cpu" else "auto"


def default_precision(device: str) -> str:
    """The precision a model runs in on `device` when ``options.precision`` is not set."""
    return "fp16" if device.startswith("cuda") else "fp32"


def check_precision(precision: str, device: str) -> None:
    """ScorerError when `precision` cannot run on `device` (int8 is a CPU kernel)."""
    if precision == "int8" and device.startswith("cuda"):
        raise ScorerError(f"[scorer] options.precision = 'int8' runs on CPUs only; on "
                          f"{device} use fp16 (the default there), bf16 or fp32")
