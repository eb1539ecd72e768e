"""Typed records read from JSON: a frozen dataclass built from a mapping whose every field is checked
against its annotation, so that a damaged or hand-edited file fails naming the file and the key, never
with a KeyError or a TypeError later on.

Annotations understood: int, float, str, bool, Any, `X | None`, tuple[X, ...], tuple[X, Y], list[X],
dict[str, X] (and bare dict, list), and nested dataclasses. JSON's true and false are never numbers;
a float field takes an int (as the numeric tower does) but never NaN or an infinity; values keep their
JSON type (an int stays an int), so a record written back gives the same bytes."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, TypeGuard, TypeVar, Union

from wtours.errors import WtoursError

R = TypeVar("R")


def is_number(value: Any, kinds: type | tuple[type, ...] = (int, float)) -> TypeGuard[int | float]:
    """An int or float (or one of `kinds`), never a bool: JSON's true is not 1."""
    return isinstance(value, kinds) and not isinstance(value, bool)


def read_record(cls: type[R], data: Any, where: str, hint: str) -> R:
    """`cls` (a dataclass) from `data`, every field checked for its annotated type; a field with a default
    may be missing. `where` names the file (and part) in the error, a WtoursError with `hint` ("": the
    caller names it). Keys that are no field are ignored."""
    try:
        return _record(cls, data, "")
    except _Wrong as wrong:
        raise WtoursError(f"{where}: {wrong}" if where else str(wrong), hint) from None


class _Wrong(Exception):
    """A value of the wrong type at a key path; read_record names the file."""


_KIND_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string", int: "an integer",
                                float: "a number", bool: "a boolean", type(None): "null"}


def kind_name(value: Any) -> str:
    """What a JSON value is, in words: "a string", "an integer", "a list" ..."""
    return _KIND_NAMES.get(type(value), type(value).__name__)


@functools.cache
def _field_types(cls: type) -> tuple[tuple[dataclasses.Field, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls) if f.init)


def _record(cls: Any, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise _Wrong(f"{path.rstrip('.') or 'it'} is {kind_name(data)}, not an object")
    values = {}
    for field, annotation in _field_types(cls):
        key = f"{path}{field.name}"
        if field.name in data:
            values[field.name] = _value(annotation, data[field.name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _Wrong(f"{key} is missing")
    return cls(**values)


def _value(annotation: Any, value: Any, key: str) -> Any:
    """`value` checked against `annotation` (containers converted: a JSON list becomes a declared tuple)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        if len(others) != 1:
            raise TypeError(f"{key}: read_record reads only `X | None` unions, not {annotation}")
        return _value(others[0], value, key)
    if dataclasses.is_dataclass(annotation):
        return _record(typing.cast(type, annotation), value, f"{key}.")
    if origin in (tuple, list) or annotation in (tuple, list):
        return _sequence(origin or annotation, args, value, key)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _Wrong(f"{key} is {kind_name(value)}, not an object")
        item = args[1] if args else Any
        return {k: _value(item, v, f"{key}.{k}") for k, v in value.items()}
    return _scalar(annotation, value, key)


def _sequence(kind: type, args: tuple, value: Any, key: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _Wrong(f"{key} is {kind_name(value)}, not a list")
    if kind is tuple and args and args[-1] is not Ellipsis:  # tuple[X, Y]: exactly these
        if len(value) != len(args):
            raise _Wrong(f"{key} has {len(value)} items, not {len(args)}")
        items = args
    elif args and args[0] in (int, str) and all(type(v) is args[0] for v in value):
        return kind(value)  # the common long list (a shard's byte offsets): one pass, no per-item calls
    else:
        items = (args[0] if args else Any,) * len(value)
    return kind(_value(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(items, value)))


def _scalar(annotation: Any, value: Any, key: str) -> Any:
    if annotation is float:
        if not is_number(value):
            raise _Wrong(f"{key} is {kind_name(value)}, not a number")
        if not math.isfinite(value):
            raise _Wrong(f"{key} is {value}, not a finite number")
        return value
    if annotation in (int, str, bool):
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise _Wrong(f"{key} is {kind_name(value)}, not {_KIND_NAMES[annotation]}")
        return value
    raise TypeError(f"{key}: read_record does not read {annotation}")
