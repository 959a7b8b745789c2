"""The embedded demo corpus: docstrings of the Python standard library.

Items are the public functions, classes and methods of a fixed list of standard-library
modules, ``"<qualified name>: <docstring>"``; queries are the first sentence of each docstring
("Return the number of items in a container."), which reads like a developer's search. Real
text with no download, built from the running interpreter (so it varies a little between
Python versions).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import warnings

MODULES = tuple(
    (
        "abc argparse array ast asyncio base64 bisect binascii bz2 calendar cmath codecs "
        "collections colorsys configparser contextlib copy csv dataclasses datetime decimal "
        "difflib email.utils enum filecmp fnmatch fractions ftplib functools getpass gettext "
        "glob graphlib gzip hashlib heapq hmac html html.parser http.client http.cookies imaplib "
        "inspect io ipaddress itertools json keyword linecache locale logging lzma mailbox math "
        "mimetypes numbers operator os os.path pathlib pickle pkgutil platform plistlib poplib "
        "pprint queue quopri random re reprlib sched secrets selectors shelve shlex shutil "
        "signal smtplib socket socketserver sqlite3 ssl stat statistics string struct subprocess "
        "sysconfig tarfile tempfile textwrap threading time timeit tokenize tomllib trace "
        "traceback typing unicodedata urllib.parse urllib.request uuid warnings weakref "
        "webbrowser wave xml.dom.minidom xml.etree.ElementTree zipfile zlib zoneinfo "
    ).split()
)

MAX_DOC_CHARS = 1200
_SENTENCE = re.compile(r"(.+?[.!?])(\s|$)", re.S)


@functools.cache
def stdlib_docs() -> list[tuple[str, str, str]]:
    """(qualified name, first sentence, docstring) of every documented public callable,
    sorted by name, one entry per name.

    Read in a fresh interpreter, once per process: libraries this process imported may have
    replaced standard-library functions (torch replaces ``inspect.getfile``), and the corpus
    must not depend on what ran before it."""
    done = subprocess.run([sys.executable, "-I", "-c", _READ], capture_output=True,
                          check=True, timeout=300, env={**os.environ, "PYTHONPATH": _HERE})
    return [tuple(x) for x in json.loads(done.stdout)]


_HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_READ = ("import json, sys; sys.path.insert(0, __import__('os').environ['PYTHONPATH']); "
         "from curindex.inputs.demo import read_stdlib_docs; print(json.dumps(read_stdlib_docs()))")


def read_stdlib_docs() -> list[tuple[str, str, str]]:
    """`stdlib_docs`, read in this process."""
    seen: dict[str, tuple[str, str, str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for modname in MODULES:
            try:
                mod = importlib.import_module(modname)
            except ImportError:  # a module missing from this interpreter build
                continue
            for name, obj in _public_members(mod, modname):
                doc = inspect.getdoc(obj) or ""
                summary = _first_sentence(doc)
                if len(summary.split()) >= 4 and name not in seen:
                    seen[name] = (name, summary, doc[:MAX_DOC_CHARS])
    return [seen[k] for k in sorted(seen)]


def _public_members(mod, modname: str):
    for attr, obj in sorted(vars(mod).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isbuiltin(obj):
            yield f"{modname}.{attr}", obj
        elif inspect.isclass(obj):
            yield f"{modname}.{attr}", obj
            for mname, meth in sorted(vars(obj).items()):
                if not mname.startswith("_") and (
                    inspect.isfunction(meth) or inspect.ismethoddescriptor(meth)
                ):
                    yield f"{modname}.{attr}.{mname}", meth


def _first_sentence(doc: str) -> str:
    para = doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip()
    m = _SENTENCE.match(para)
    return (m.group(1) if m else para).strip()


def items_table() -> tuple[list[str], list[str]]:
    """(ids, texts) of the demo items."""
    docs = stdlib_docs()
    return [n for n, _, _ in docs], [f"{n}: {d}" for n, _, d in docs]


def queries_table() -> tuple[list[str], list[str]]:
    """(ids, texts) of the demo queries: one per distinct first sentence."""
    by_text: dict[str, str] = {}
    for name, summary, _ in stdlib_docs():
        by_text.setdefault(summary, f"q:{name}")
    pairs = sorted((qid, text) for text, qid in by_text.items())
    return [q for q, _ in pairs], [t for _, t in pairs]
