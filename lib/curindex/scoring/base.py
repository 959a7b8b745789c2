"""The Scorer protocol, the scorer registry, and the per-worker scorer cache.

A scorer maps a block of queries and a block of items to a dense float32 score matrix. The
build sends executors a *config* and a *fingerprint* (both small and picklable), never a model:
each Python worker builds the scorer once and caches it under the fingerprint (see
``get_scorer``), so it is loaded once per worker, not once per batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from curindex.config import ScorerConfig
from curindex.errors import CurIndexError, ScorerError
from curindex.scoring.models import (
    cached_model_dir,
    default_minilm_path,
    is_model_id,
    model_files_digest,
    resolve_model_path,
)
from curindex.scoring.registry import KINDS


@runtime_checkable
class Scorer(Protocol):
    """What every scorer provides."""

    fingerprint: str  # changes whenever weights or score-affecting settings change

    def score_block(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """Scores of every (query, item) pair: float32, shape [len(queries), len(items)]."""
        ...


# A user's `module:callable` target: called with the scorer config, returns a Scorer.
ScorerFactory = Callable[[ScorerConfig], Scorer]


def model_dir(cfg: ScorerConfig) -> Path | None:
    """The local model directory a scorer config reads, or None when it reads none: its
    `path` folder, the snapshot of its Hugging Face model id at `revision` in the local cache
    (``curindex.scoring.models``; ScorerError saying how to fetch it when it is not cached), or
    the packaged MiniLM."""
    return _model_location(cfg)[0]


def _model_location(cfg: ScorerConfig) -> tuple[Path | None, str | None]:
    """(model_dir, the commit hash when `path` is a Hugging Face model id)."""
    if not KINDS[cfg.kind].reads_model:
        return None, None
    if cfg.path:
        return resolve_model_path(cfg.path, revision=cfg.revision)
    return default_minilm_path(), None


def localized(cfg: ScorerConfig) -> ScorerConfig:
    """`cfg` with a Hugging Face model id in `path` replaced by its cached snapshot folder,
    which is what the scorer classes load."""
    if not (KINDS[cfg.kind].reads_model and cfg.path and is_model_id(cfg.path)):
        return cfg
    return dataclasses.replace(cfg, path=str(cached_model_dir(cfg.path, cfg.revision)))


def fingerprint_for(cfg: ScorerConfig) -> str:
    """A digest of everything that determines the scores: the kind, the score-affecting
    settings, and the content of the model files (not their location, so the same weights in
    another folder give the same fingerprint). Computed on the driver without loading a model;
    a scorer that could not run (`check_positions`) has none: ScorerError.
    """
    h = hashlib.sha256()
    settings = {
        "kind": cfg.kind,
        "target": cfg.target,
        "max_query_tokens": cfg.max_query_tokens,
        "max_item_tokens": cfg.max_item_tokens,
        "options": dict(sorted(cfg.options.items())),
    }
    d, commit = _model_location(cfg)
    if commit is not None:  # a model id: the revision it resolved to (a local folder has none)
        settings["commit"] = commit
    elif cfg.kind == "callable" and cfg.revision != "main":
        # a callable reads what it likes; a revision it is given must tell its models apart
        settings["revision"] = cfg.revision
    h.update(json.dumps(settings, sort_keys=True).encode())
    if d is not None:
        check_positions(cfg, d)
        h.update(model_files_digest(d, what="[scorer] path").encode())
    if cfg.kind == "callable":
        h.update(_target_source_digest(cfg.target).encode())
    return "sha256:" + h.hexdigest()[:32]


def check_positions(cfg: ScorerConfig, folder: Path) -> None:
    """Raise ScorerError naming the setting when a token limit of `cfg` cannot fit the
    model's position embeddings (``max_position_embeddings`` in its ``config.json``), which
    would otherwise stop a build mid-score with a tensor size error. A model whose config
    does not say is left to its loader."""
    try:
        doc = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        limit = int(doc["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    for key, specials in KINDS[cfg.kind].positions:
        value = getattr(cfg, key)
        if value + specials > limit:
            beside = f" with the pair's {specials} special tokens" if specials else ""
            raise ScorerError(
                f"[scorer] {key} = {value}{beside} does not fit the model's {limit} positions "
                f"(max_position_embeddings in {folder / 'config.json'}): use at most "
                f"{limit - specials}")


def _target_source_digest(target: str) -> str:
    fn = resolve_target(target)
    try:
        src = inspect.getsource(inspect.getmodule(fn) or fn)
    except (OSError, TypeError):
        src = target
    return hashlib.sha256(src.encode()).hexdigest()


def resolve_target(target: str) -> ScorerFactory:
    """Import `module:callable`; raise ScorerError naming the target when that fails."""
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ScorerError(f"[scorer] target {target!r}: cannot import: {e}") from e
    if not callable(obj):
        raise ScorerError(f"[scorer] target {target!r}: not callable")
    return obj


def build_scorer(cfg: ScorerConfig, fingerprint: str | None = None) -> Scorer:
    """Construct the scorer a config names (loads its model). Prefer `get_scorer` on workers."""
    fp = fingerprint or fingerprint_for(cfg)
    spec = KINDS.get(cfg.kind)
    if spec is None:  # config validation makes this unreachable
        raise ScorerError(f"[scorer] kind {cfg.kind!r}: unknown")
    if spec.factory:
        cfg = localized(cfg)
        module, _, name = spec.factory.partition(":")
        scorer: Scorer = getattr(importlib.import_module(module), name)(cfg, fingerprint=fp)
        return scorer
    factory = resolve_target(cfg.target)
    try:
        scorer = factory(cfg)
    except Exception as e:  # a user's factory: report which one failed, and how
        raise ScorerError(f"[scorer] target {cfg.target!r} raised {e!r}") from e
    if not hasattr(scorer, "score_block"):
        raise ScorerError(
            f"[scorer] target {cfg.target!r} returned {type(scorer).__name__}, "
            "which has no score_block(queries, items)"
        )
    with contextlib.suppress(AttributeError):  # a read-only fingerprint is the user's
        scorer.fingerprint = fp  # type: ignore[misc]
    return scorer


# One scorer per Python worker process, keyed by fingerprint and device (Spark reuses Python
# workers across tasks, so this survives from one task to the next; a later task may be
# assigned another GPU).
_CACHE: dict[tuple[str, str], Scorer] = {}


def get_scorer(cfg: ScorerConfig, fingerprint: str) -> Scorer:
    """The cached scorer of this process for `fingerprint` on ``cfg.device``, built on first
    use."""
    key = (fingerprint, cfg.device)
    scorer = _CACHE.get(key)
    if scorer is None:
        scorer = build_scorer(cfg, fingerprint)
        _CACHE[key] = scorer
    return scorer


def prepare_queries(cfg: ScorerConfig, fingerprint: str, queries: Sequence[str]) -> object | None:
    """The picklable query-side state of a scorer for `queries` (computed here, once), or None
    when its kind has none. Workers hand it to their scorer's `load_queries`."""
    if not KINDS[cfg.kind].encodes_queries:
        return None
    return build_scorer(cfg, fingerprint).prepare_queries(queries)  # type: ignore[attr-defined]


@contextlib.contextmanager
def scorer_errors(cfg: ScorerConfig, *, where: str) -> Iterator[None]:
    """Report a scorer's own failure inside the block (any exception but a curindex error:
    a bug in a user's scorer, a model that cannot take the input) as a ScorerError naming
    the scorer and `where`, so a build stopped by it exits as a bad scorer, not a crash."""
    try:
        yield
    except CurIndexError:
        raise
    except Exception as e:
        name = f"target {cfg.target!r}" if cfg.kind == "callable" else f"kind {cfg.kind!r}"
        raise ScorerError(f"[scorer] {name} failed on {where}: {type(e).__name__}: {e}") from e


def checked_scores(scores: object, n_queries: int, n_items: int, *, where: str) -> np.ndarray:
    """Validate a score_block result: a finite float array of shape [n_queries, n_items].

    Raises ScorerError naming `where` (for example the first item id of the block).
    """
    try:
        arr = np.asarray(scores, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ScorerError(f"scorer returned non-numeric scores for {where}: {e}") from e
    if arr.shape != (n_queries, n_items):
        raise ScorerError(
            f"scorer returned shape {arr.shape} for {where}, expected "
            f"({n_queries}, {n_items}) = (queries, items)"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        qi, ii = np.argwhere(bad)[0]
        raise ScorerError(
            f"scorer returned {int(bad.sum())} non-finite scores (NaN or inf) for {where}; "
            f"first at query {qi}, item {ii} of the block"
        )
    return arr


def score_pairs(scorer: Scorer, queries: Sequence[str], items: Sequence[str], *,
                where: str) -> np.ndarray:
    """Scores of aligned pairs ``(queries[j], items[j])``: float32 [len(pairs)], checked.

    A scorer with its own ``score_pairs(queries, items)`` (which can put pairs of different
    queries in one forward batch) answers directly; any other gets one ``score_block`` call
    per distinct query (``[q]`` x its items) or per distinct item (its queries x ``[item]``),
    whichever makes fewer calls. Raises ScorerError naming `where`."""
    if len(queries) != len(items):
        raise ValueError(f"{len(queries)} queries and {len(items)} items do not pair up")
    if not len(queries):
        return np.zeros(0, dtype=np.float32)
    native = getattr(scorer, "score_pairs", None)
    if native is not None:
        return checked_scores(np.asarray(native(list(queries), list(items))).reshape(1, -1),
                              1, len(queries), where=where)[0]
    out = np.empty(len(queries), dtype=np.float32)
    by_query: dict[str, list[int]] = {}
    by_item: dict[str, list[int]] = {}
    for j, (q, t) in enumerate(zip(queries, items, strict=True)):
        by_query.setdefault(q, []).append(j)
        by_item.setdefault(t, []).append(j)
    if len(by_query) <= len(by_item):
        for q, js in by_query.items():
            out[js] = checked_scores(scorer.score_block([q], [items[j] for j in js]), 1,
                                     len(js), where=where)[0]
    else:
        for t, js in by_item.items():
            out[js] = checked_scores(scorer.score_block([queries[j] for j in js], [t]),
                                     len(js), 1, where=where)[:, 0]
    return out


def truncated_mask(scorer: Scorer, texts: Sequence[str], *, role: str) -> np.ndarray:
    """Which texts are longer than the scorer reads (bool per text); all False for scorers
    that do not say."""
    fn = getattr(scorer, "truncated", None)
    if fn is None:
        return np.zeros(len(texts), dtype=bool)
    return np.asarray(fn(texts, role=role), dtype=bool)
