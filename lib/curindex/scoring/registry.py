"""The scorer kinds: one table, read by the config loader (a bad kind or option fails when the
config is loaded, naming the file and key) and by the workers (which class a kind builds).

Nothing here imports a model library or another curindex module, so the config loader can
read it without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# An option's check: the problem with a value (a sentence), or None when the value is good.
OptionCheck = Callable[[str], str | None]


def choice(*allowed: str) -> OptionCheck:
    def check(value: str) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


def integer(minimum: int, maximum: int) -> OptionCheck:
    """An integer option in [minimum, maximum] (bounded: a scorer allocates or seeds with it)."""
    def check(value: str) -> str | None:
        try:
            ok = len(value) <= 24 and minimum <= int(value) <= maximum
        except ValueError:
            ok = False
        return None if ok else f"must be an integer in [{minimum:,}, {maximum:,}]"

    return check


PRECISION = choice("fp32", "int8", "bf16", "fp16")


@dataclass(frozen=True)
class Kind:
    name: str
    # "module:Class" built as Class(cfg, fingerprint=...); "" for `callable` (the user's target)
    factory: str
    path: str  # "required", "optional" (a model directory overriding the packaged one), "unused"
    # option name -> its check; None: any string options (passed through to the user's scorer)
    options: dict[str, OptionCheck] | None
    # encodes queries apart from items (prepare_queries / load_queries): the build encodes its
    # queries once on the driver and broadcasts them
    encodes_queries: bool = False
    # reads a model directory (its files enter the fingerprint)
    reads_model: bool = False
    # (setting, special tokens beside it) that must fit the model's position embeddings
    positions: tuple[tuple[str, int], ...] = ()


KINDS: dict[str, Kind] = {k.name: k for k in (
    # maxsim's limits count the special tokens; a cross-encoder's pair holds the query, at
    # least two special tokens, and as much of the item as the positions left allow
    Kind("maxsim-minilm", "curindex.scoring.maxsim:MaxSimScorer", "optional",
         {"precision": PRECISION}, encodes_queries=True, reads_model=True,
         positions=(("max_query_tokens", 0), ("max_item_tokens", 0))),
    Kind("cross-encoder", "curindex.scoring.cross_encoder:CrossEncoderScorer", "required",
         {"precision": PRECISION, "label_index": integer(0, 1 << 16)}, reads_model=True,
         positions=(("max_query_tokens", 2),)),
    # The toy's embedding table is vocab x dim float64: at most 2 GB (a vocab of 2e9 once
    # had a reader allocate 256 GB).
    Kind("toy", "curindex.scoring.toy:ToyScorer", "unused",
         {"dim": integer(1, 256), "vocab": integer(1, 1 << 20),
          "seed": integer(0, 2**63 - 1)}),
    Kind("callable", "", "optional", None),
)}


def scorer_problems(kind: str, *, path: str, target: str, options: dict[str, str]
                    ) -> list[tuple[str, str]]:
    """(key, problem) for each thing wrong with a scorer's settings; empty when they are good.
    Keys are as in a config file: ``kind``, ``path``, ``target``, ``options.NAME``."""
    spec = KINDS.get(kind)
    if spec is None:
        return [("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")]
    out = []
    if spec.path == "required" and not path:
        out.append(("path", f"{kind} needs a path (a local model directory)"))
    if kind == "callable" and not (":" in target and all(target.split(":", 1))):
        out.append(("target", f"kind = 'callable' needs target = 'module:callable', "
                              f"got {target!r}"))
    if spec.options is not None:
        for name, value in sorted(options.items()):
            check = spec.options.get(name)
            if check is None:
                known = ", ".join(spec.options) or "none"
                out.append((f"options.{name}", f"unknown option for {kind} (known: {known})"))
            elif (problem := check(value)) is not None:
                out.append((f"options.{name}", f"{value!r}: {problem}"))
    return out
