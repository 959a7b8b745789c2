"""The pre-flight check of a build config: everything that can be known without Spark, in
seconds, with every problem listed at once.

``curindex check --conf FILE`` prints it; ``curindex build``, ``curindex plan`` and the Airflow
DAG's first task run it before anything starts. It checks, in order:

1. the config file (a ConfigError stops here: the rest needs a config);
2. each input (``curindex.inputs.sources``): the file is there and readable, its schema (a
   Parquet dataset's footers; JSON lines: a sample) has the id and text columns, of usable
   types, and a sample of its rows has ids and texts; inputs on a URI this machine cannot read
   (``s3a://``, ``hdfs://``) are left to the build and said so;
3. the row counts against ``[anchors]`` (k_q - synthetic_queries + n_test queries, k_i items),
   naming ``[anchors] synthetic_queries`` when the query log is small;
4. the scorer: it loads (its fingerprint reads every model file) and scores one sampled pair,
   and the model's positions hold the token settings;
5. the store: reachable and writable (a probe file is written and removed), and the work
   folder (required for a store that is not a local path).

A problem is one line naming the config file and the key (``conf/x.toml: [items] id_column:
items '/data/items.parquet': missing column 'doc_id' (columns: id, title, text)``).
:meth:`CheckReport.raise_for_problems` raises them all as one :class:`CheckError` (a
ConfigError: exit code 7).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from curindex.config import BuildConfig, load_config
from curindex.errors import ConfigError, CurIndexError, InputError
from curindex.inputs.sources import (
    Inspected,
    anchor_count_problems,
    inspect_source,
    is_remote,
    resolve_source,
    source_problems,
    sparse_count_problems,
)


class CheckError(ConfigError):
    """The pre-flight check found problems; the message lists every one, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = list(problems)
        head = f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''} " \
               "found before anything started:"
        super().__init__("\n  ".join([head, *problems]) if len(problems) > 1 else problems[0])


@dataclass
class CheckReport:
    """What `check_build` found: `problems` (each naming the file and key), `checked` (what
    passed, one line each) and `notes` (what this machine could not check)."""

    source: str
    config: BuildConfig | None = None
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: {key}: {message}" if key else
                             f"{self.source}: {message}")

    def raise_for_problems(self) -> None:
        """CheckError listing every problem, when there is one."""
        if self.problems:
            raise CheckError(self.source, self.problems)

    def to_dict(self) -> dict:
        return {"config": self.source, "ok": self.ok, "problems": self.problems,
                "checked": self.checked, "notes": self.notes}


def check_build(path: str | Path, *, scorer: bool = True) -> CheckReport:
    """Check the build config at `path` (see the module docstring); never raises for what it
    checks. `scorer=False` skips loading the model (its files are still fingerprinted)."""
    report = CheckReport(source=str(path))
    try:
        cfg = load_config(path)
    except ConfigError as e:  # already "FILE: [section] key: problem"
        report.problems.append(str(e))
        return report
    report.config = cfg
    counts, sample = {}, {}
    for role in ("items", "queries"):
        counts[role], sample[role] = _check_input(report, cfg, role)
    count_problems = sparse_count_problems if cfg.index.kind == "sparse" else \
        anchor_count_problems
    for key, problem in count_problems(cfg.anchors, n_items=counts["items"],
                                       n_queries=counts["queries"], sparse=cfg.sparse):
        report.problem(key, problem)
    _check_scorer(report, cfg, sample, load=scorer)
    _check_store(report, cfg)
    return report


def _check_input(report: CheckReport, cfg: BuildConfig, role: str
                 ) -> tuple[int | None, str | None]:
    """(row count, one sampled text) of an input, or None where it could not be read."""
    inp = getattr(cfg, role)
    src = resolve_source(inp, role=role)
    if is_remote(src.path):
        report.notes.append(f"{role}: {src.path} is read by Spark, not checked here")
        return None, None
    try:
        seen: Inspected = inspect_source(src)
    except InputError as e:
        report.problem(f"[{role}] {'format' if 'cannot read as' in str(e) else 'path'}", str(e))
        return None, None
    problems = source_problems(src, seen)
    for key, problem in problems:
        report.problem(f"[{role}] {key}", problem)
    if problems:
        return None, None
    report.checked.append(f"{role}: {seen.rows:,} rows in {src.path} ({src.format}), columns "
                          f"{src.id_column} and {', '.join(src.text_columns)}")
    return seen.rows, next((t for _, t in seen.sample if t.strip()), None)


def _check_scorer(report: CheckReport, cfg: BuildConfig, sample: dict[str, str | None], *,
                  load: bool) -> None:
    from curindex.scoring.base import build_scorer, checked_scores, fingerprint_for, model_dir
    from curindex.scoring.device import driver_device

    s = dataclasses.replace(cfg.scorer, device=driver_device(cfg.scorer.device))
    try:
        fingerprint = fingerprint_for(s)
        folder = model_dir(s)
    except CurIndexError as e:
        report.problem(_scorer_key(s, e), str(e))
        return
    if folder is not None:
        for key, problem in token_limit_problems(s.kind, model_positions(folder),
                                                 max_query_tokens=s.max_query_tokens,
                                                 max_item_tokens=s.max_item_tokens):
            report.problem(f"[scorer] {key}", problem)
    if not load:
        report.checked.append(f"scorer: {s.kind}, fingerprint {fingerprint} (not loaded)")
        return
    query, item = sample["queries"] or "a query", sample["items"] or "an item"
    try:
        scores = build_scorer(s, fingerprint).score_block([query], [item])
        checked_scores(scores, 1, 1, where="one sampled (query, item) pair")
    except CurIndexError as e:
        report.problem(_scorer_key(s, e), str(e))
        return
    except Exception as e:  # a user's scorer: whatever it raised is the problem
        report.problem("[scorer] target" if s.kind == "callable" else "[scorer] kind",
                       f"scoring one sampled pair raised {e!r}")
        return
    report.checked.append(f"scorer: {s.kind} loaded, one pair scored, fingerprint "
                          f"{fingerprint}")
    if cfg.scorer.device not in ("auto", "cpu"):
        report.notes.append(f"scorer: [scorer] device = {cfg.scorer.device!r} is checked by "
                            "each Spark task (the executors' GPUs are not this machine's)")


def _scorer_key(s, error: Exception) -> str:
    """The ``[scorer]`` key a scorer error is about (its message names it when it knows)."""
    text = str(error)
    for key in ("path", "target", "revision", "options.label_index", "options.precision",
                "device"):
        if f"[scorer] {key}" in text:
            return f"[scorer] {key}"
    return "[scorer] target" if s.kind == "callable" else "[scorer] path"


def model_positions(folder: Path) -> int | None:
    """The token positions of the model in `folder` (``max_position_embeddings`` of its
    config.json), None when it does not say."""
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8")).get(
            "max_position_embeddings")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def token_limit_problems(kind: str, positions: int | None, *, max_query_tokens: int,
                         max_item_tokens: int) -> list[tuple[str, str]]:
    """(``[scorer]`` key, problem) where a token setting exceeds what the model can read: a
    text encoded alone (maxsim) needs its tokens within the model's positions; a
    cross-encoder's pair holds the query, at least one item token and 3 special tokens."""
    if positions is None:
        return []
    out = []
    if kind == "cross-encoder":
        if max_query_tokens + 4 > positions:
            out.append(("max_query_tokens", f"{max_query_tokens} leaves no room for the item "
                        f"in the model's {positions} positions (a pair also holds 3 special "
                        "tokens)"))
        return out
    for key, value in (("max_query_tokens", max_query_tokens),
                       ("max_item_tokens", max_item_tokens)):
        if value > positions:
            out.append((key, f"{value} > the model's {positions} token positions"))
    return out


def _check_store(report: CheckReport, cfg: BuildConfig) -> None:
    uri = cfg.store.uri
    problem = writable(uri)
    if problem:
        report.problem("[store] uri", problem)
    else:
        report.checked.append(f"store: {uri} is writable")
    work = cfg.store.work_dir
    if not work:
        if "://" in uri:
            report.problem("[store] work_dir", f"required when the store is not a local path "
                           f"(store uri {uri!r}): a Hadoop URI Spark can write, e.g. s3a://...")
        return
    if is_remote(work):
        report.notes.append(f"work folder: {work} is written by Spark, not checked here")
        return
    problem = writable(work.removeprefix("file://").removeprefix("file:"))
    if problem:
        report.problem("[store] work_dir", problem)
    else:
        report.checked.append(f"work folder: {work} is writable")


def writable(uri: str) -> str | None:
    """None when a store (or work folder) at `uri` can be created and written here, else the
    problem. A local folder that does not exist yet needs a writable folder above it; a
    folder that exists, and any URI, get a probe file written and removed."""
    import pyarrow.fs as pafs

    if "://" not in uri:
        path = Path(os.path.abspath(os.path.expanduser(uri)))
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            return f"{uri}: {existing} is not a folder"
        if existing != path:
            ok = os.access(existing, os.W_OK | os.X_OK)
            return None if ok else f"{uri}: cannot create it: {existing} is not writable"
        fs, root = pafs.LocalFileSystem(), str(path)
    else:
        try:
            fs, root = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as e:
            return f"{uri}: cannot open it: {e}"
    probe = f"{root.rstrip('/')}/.curindex-check-{secrets.token_hex(4)}"
    try:
        with fs.open_output_stream(probe) as out:
            out.write(b"curindex check\n")
        fs.delete_file(probe)
    except OSError as e:
        return f"{uri}: not writable: {str(e).splitlines()[0][:300]}"
    return None
