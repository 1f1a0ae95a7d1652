"""Typed dataclass trees from plain mappings (JSON, YAML), shared by the model and service configs.

Unknown keys are errors, so a typo in a config file fails loudly instead of being ignored;
values are checked against the field types and lists become tuples where a field says so.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used, with the key path that is wrong."""


def from_mapping(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclasses; None means all defaults."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        item = args[0] if len(set(args)) == 1 else Any
        coerced = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(coerced) if origin is tuple else coerced
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {value!r} not one of {typing.get_args(hint)}")
        return value
    if hint in (int, float, str, bool):
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
