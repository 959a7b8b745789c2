"""A small typed reader and writer over frozen dataclasses (the manifest's sections):
``load`` reads a JSON value into a type (dataclasses, tuples, dicts, unions with None,
scalars), raising IntegrityError naming where the value is wrong; ``dump`` gives it back."""

from __future__ import annotations

import dataclasses
import functools
import typing
from types import NoneType, UnionType
from typing import Any

from curindex.config import BuildConfig, config_from_dict
from curindex.errors import IntegrityError

# The string annotations of a class, evaluated once: evaluating them compiles each one, which
# was most of the time a reader took to read a manifest.
_type_hints = functools.cache(typing.get_type_hints)


def load(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if tp is BuildConfig:
        try:
            return config_from_dict(value, source=where, check=False)
        except Exception as e:
            raise IntegrityError(f"{where}: {e}") from e
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise IntegrityError(f"{where}: expected an object, got {type(value).__name__}")
        hints = _type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise IntegrityError(f"{where}: unknown field {unknown[0]!r}")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = load(hints[name], value[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise IntegrityError(f"{where}: missing field {name!r}")
        return tp(**kwargs)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (UnionType, typing.Union):
        if value is None and NoneType in args:
            return None
        (inner,) = [a for a in args if a is not NoneType]
        return load(inner, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise IntegrityError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return tuple(load(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):  # tuple[X, Y]: exactly that many
            raise IntegrityError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(load(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(args, value,
                                                                                 strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise IntegrityError(f"{where}: expected an object, got {type(value).__name__}")
        return {str(k): load(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and type(value) is int:
        return float(value)
    if type(value) is not tp and not (tp is float and isinstance(value, float)):
        raise IntegrityError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def dump(value: Any) -> Any:
    if isinstance(value, BuildConfig):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    return value
