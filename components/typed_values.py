"""Builds frozen settings dataclasses from plain values (JSON, YAML, command-line text).

One coercion for every settings class (example generation, hyperparameters, gates): the
command line, a config file and TFX's JSON parameters all arrive as strings, numbers and
lists, and every class turns them into its field types the same way. Unknown names raise,
so that a misspelt setting never silently leaves the default in place.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import re
import typing
from typing import Any, Dict, Mapping, Optional, Type, TypeVar

T = TypeVar("T")
_NONE_WORDS = ("none", "null", "")


def coerce(hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` (bool, int, float, str, Optional[...], Tuple[X, ...],
    or a settings dataclass built from a mapping).

    Strings are parsed ("true"/"false", "1,2,3" for tuples, "none" for Optional); an int
    field refuses 2.5. Raises ValueError (TypeError for an unsupported hint).
    """
    if typing.get_origin(hint) is typing.Union:
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        return coerce(inner, value)
    if hint is bool:
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("true", "1", "yes"):
                return True
            if word in ("false", "0", "no"):
                return False
            raise ValueError("expected a boolean")
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise ValueError("expected a boolean")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        number = float(value)
        if number != int(number):
            raise ValueError("expected an integer")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError("expected a string")
        return str(value)
    if dataclasses.is_dataclass(hint):  # a nested settings class, from a mapping
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping of {hint.__name__} fields")
        return build(hint, value, hint.__name__ + " field")
    if typing.get_origin(hint) in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ValueError("expected a mapping")
        return dict(value)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            value = [part for part in re.split(r"[,\s]+", value) if part]
        if not isinstance(value, (list, tuple)):
            raise ValueError("expected a list")
        item_type = typing.get_args(hint)[0]
        return tuple(coerce(item_type, item) for item in value)
    raise TypeError(f"unsupported type {hint}")


def field_hints(cls: type) -> Dict[str, Any]:
    """Field name -> resolved type hint of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


def build(cls: Type[T], values: Optional[Mapping[str, Any]], what: str = "setting",
          base: Optional[T] = None) -> T:
    """``cls`` from ``values`` (names -> plain values) on top of ``base`` (or the field
    defaults). ValueError names an unknown key (with the known ones) or a bad value."""
    values = dict(values or {})
    hints = field_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"unknown {what}s {unknown}; known: {sorted(hints)}")
    coerced = {}
    for name, value in values.items():
        try:
            coerced[name] = coerce(hints[name], value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{what} {name}={value!r}: {error}") from None
    if base is not None:
        return dataclasses.replace(base, **coerced)
    return cls(**coerced)


def to_plain(instance: Any) -> Dict[str, Any]:
    """A JSON-friendly dict of a settings dataclass (tuples as lists) that :func:`build`
    turns back into equal values."""
    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return plain(dataclasses.asdict(instance))
