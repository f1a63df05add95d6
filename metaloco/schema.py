"""Typed configuration: dataclasses loaded from YAML and validated on load.

This is metaloco's one configuration system. Every config file (robots, scenarios,
training presets, node parameters) is a dataclass; `from_dict` builds it from plain
data and every error names the file, the key path and what was expected, before
anything runs.

A field can carry validation in its metadata:
    `range`: (low, high) inclusive bounds for numbers (either may be None),
    `choices`: the allowed values,
    `length`: the required length of a list.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong. The message names the file, the key and what was expected."""

    def __init__(self, source: str, key: str, problem: str):
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: " if source else ""
        at = f"'{key}': " if key else ""
        super().__init__(f"{where}{at}{problem}")


def spec(default: Any = dataclasses.MISSING, *, doc: str = "", range: tuple | None = None,
         choices: tuple | None = None, length: int | None = None, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with validation metadata.

    Args:
        default: Default value; omit for a required field.
        doc: One line saying what the field is.
        range: Inclusive (low, high) bounds for a number or each number of a list.
        choices: Allowed values.
        length: Required list length.
        default_factory: Factory for mutable defaults.

    Returns:
        A `dataclasses.field`.
    """
    meta = {"doc": doc, "range": range, "choices": choices, "length": length}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, with errors that name the file.

    Args:
        path: The file.

    Returns:
        The parsed data.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", "file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "", f"not valid YAML: {err}") from None


def from_dict(cls: type[T], data: Any, source: str = "", prefix: str = "") -> T:
    """Build dataclass `cls` from plain data, validating every key and value.

    Args:
        cls: The dataclass type.
        data: A mapping (from YAML or ROS parameters).
        source: The file (or node) it came from, for error messages.
        prefix: The key path of `data` inside its file, for error messages.

    Returns:
        An instance of `cls`.

    Raises:
        ConfigError: An unknown key, a missing required key or a bad value.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, prefix, f"expected a mapping with keys {_field_names(cls)}, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(source, _join(prefix, str(key)),
                              f"unknown key; allowed keys are {sorted(fields)}")
    values = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, key, "required key is missing")
            continue
        values[name] = _convert(hints[name], data[name], source, key, f.metadata)
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(source, prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """Turn a dataclass (possibly nested) back into plain data that `from_dict` accepts."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _field_names(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _convert(tp: Any, value: Any, source: str, key: str, meta: typing.Mapping) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error, with its full key path
            return _convert(options[0], value, source, key, meta)
        errors = []
        for option in options:
            try:
                return _convert(option, value, source, key, meta)
            except ConfigError as err:
                errors.append(err.problem)
        raise ConfigError(source, key, " or ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ConfigError(source, key, f"got {value!r}; allowed values are {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected a list, got {value!r}")
        length = meta.get("length")
        if length is not None and len(value) != length:
            raise ConfigError(source, key, f"expected a list of {length} values, got {len(value)}")
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, source, f"{key}[{i}]", meta) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, source, _join(key, str(k)), {}) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        if tp is int and not float(value).is_integer():
            raise ConfigError(source, key, f"expected a whole number, got {value!r}")
        value = tp(value)
        if value != value:
            raise ConfigError(source, key, "expected a number, got NaN")
        bounds = meta.get("range")
        if bounds is not None:
            low, high = bounds
            if (low is not None and value < low) or (high is not None and value > high):
                raise ConfigError(source, key, f"{value} is out of range; allowed range is [{low}, {high}]")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(source, key, f"got {value!r}; allowed values are {list(choices)}")
    return value
