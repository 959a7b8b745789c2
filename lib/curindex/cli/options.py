"""Options every `curindex` command spells the same way.

- ``--store URI``: the index store (a local path, ``s3://``, ``hdfs://``); ``$CURINDEX_STORE``
  when the flag is absent. A store that does not exist is an error on every command.
- ``--version V``: the version (an id, or ``current``, the published one); commands that took
  the version as a positional argument (``publish V``, ``verify V``, ``report V``) still do.
- ``-o json`` / ``--output json``: one JSON document on stdout and nothing else.

A new command (``plan``, say) is a module with ``add_commands(sub)`` listed in
``curindex.cli.COMMAND_MODULES`` that calls ``add_store``, ``add_output`` and prints with
``curindex.cli.output``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

STORE_ENV = "CURINDEX_STORE"
OUTPUTS = ("text", "json")


def add_store(p: argparse.ArgumentParser) -> None:
    """``--store URI``, defaulting to ``$CURINDEX_STORE``; required when that is unset."""
    default = os.environ.get(STORE_ENV) or None
    p.add_argument("--store", metavar="URI", default=default, required=default is None,
                   help=f"index store: a local path, s3://, hdfs:// (default: ${STORE_ENV}"
                        + (f", now {default}" if default else ", unset") + ")")


def add_output(p: argparse.ArgumentParser) -> None:
    """``-o/--output text|json``."""
    p.add_argument("-o", "--output", choices=OUTPUTS, default="text",
                   help="text (default) or json: one JSON document on stdout, nothing else")


def add_version(p: argparse.ArgumentParser, *, positional: bool = False,
                default: str | None = "current") -> None:
    """``--version V`` (and, for commands that always took one, a positional VERSION)."""
    shown = f" (default: {default})" if default else ""
    p.add_argument("--version", dest="version_opt", metavar="VERSION", default=None,
                   help="version id, or 'current' (the published one)" + shown)
    if positional:
        p.add_argument("version_pos", metavar="VERSION", nargs="?", default=None,
                       help="the same as --version (the older spelling)")
    p.set_defaults(version_default=default)


def version_of(args: argparse.Namespace) -> str:
    """The version the command line names (ValueError, a usage error, when it names two
    different ones, or none where one is required)."""
    opt, pos = args.version_opt, getattr(args, "version_pos", None)
    if opt is not None and pos is not None and opt != pos:
        raise ValueError(f"two versions given: --version {opt} and {pos}; give one")
    version = opt or pos or args.version_default
    if not version:
        raise ValueError(f"{args.command} needs a version: --version VERSION")
    return version


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers >= 1, e.g. ``1,10``."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, "
                                         "e.g. 1,10") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers >= 1")
    return sorted(set(values))


def read_queries(path: str) -> list[str]:
    """Query texts from a file: JSON lines (field "text") or plain text (one query a line);
    blank lines are skipped. ValueError naming the file and line when one is malformed."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"queries file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"queries file {path}: cannot read: {e}") from e
    numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]
    if not numbered:
        raise ValueError(f"queries file {path}: no queries in it")
    if not numbered[0][1].lstrip().startswith("{"):
        return [ln for _, ln in numbered]
    out = []
    for n, ln in numbered:
        try:
            text = json.loads(ln)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"queries file {path}, line {n}: expected a JSON object with a "
                             "\"text\" field") from None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"queries file {path}, line {n}: \"text\" is empty or not a "
                             "string")
        out.append(text)
    return out
