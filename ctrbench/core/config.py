"""Plain-YAML configs, validated on load.

Every config section maps onto something with typed keyword arguments: a dataclass (`TrainConfig`)
or a model constructor. `check_kwargs` checks a YAML mapping against those annotations so that a
misspelled key or a value of the wrong type stops with one line naming the file, the key and the fix.
Defaults live in the dataclass / constructor signature and nowhere else. `parse_overrides` reads the
command line's `--set section.key=value`, the one override syntax of every command.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ctrbench.core.errors import CtrbenchError, closest


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error becomes a one-line CtrbenchError."""
    path = Path(path)
    if not path.is_file():
        raise CtrbenchError(f"{path}: config file not found")
    try:
        with path.open() as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CtrbenchError(f"{path}:{line}: invalid YAML: {problem}") from None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{args}]"
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


@functools.cache
def _shape(annotation: Any) -> tuple[Any, tuple[Any, ...], bool]:
    """An annotation's origin, arguments and whether it is a dataclass, worked out once per annotation."""
    return typing.get_origin(annotation), typing.get_args(annotation), dataclasses.is_dataclass(annotation)


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Return `value` checked against a type annotation (ints are accepted where floats are).

    Supports the annotations configs use: bool, int, float, str, None, Literal, unions, list[...],
    tuple[..., ...] (given as a YAML list), dict[str, ...] and dataclasses (given as a mapping). Raises
    CtrbenchError naming `where`.
    """
    if annotation is Any:
        return value
    if annotation is float and type(value) in (float, int):  # the common cases first, without introspection
        return float(value)
    if annotation in (int, str, bool) and type(value) is annotation:
        return value
    origin, args, is_dataclass = _shape(annotation)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return coerce(value, option, where)
            except CtrbenchError:
                continue
    elif origin is Literal:
        if value in args:
            return value
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        item_type = args[0] if args else Any
        items = [coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if origin is list else tuple(items)
    elif origin is dict and isinstance(value, dict):
        key_type, value_type = args if args else (Any, Any)
        return {coerce(k, key_type, where): coerce(v, value_type, f"{where}.{k}") for k, v in value.items()}
    elif is_dataclass and isinstance(value, dict):
        return build_dataclass(annotation, value, where)
    elif annotation is type(None):
        if value is None:
            return None
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise CtrbenchError(f"{where}: expected {_type_name(annotation)}, got {value!r}")


def check_kwargs(values: Any, hints: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a mapping of keyword arguments against `hints` (name -> annotation)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise CtrbenchError(f"{where}: expected a mapping of keys to values, got {type(values).__name__}")
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise CtrbenchError(
                f"{where}: unknown key {key!r}{closest(str(key), hints)}; valid keys: {', '.join(sorted(hints))}"
            )
        checked[key] = coerce(value, hints[key], f"{where}.{key}")
    return checked


def signature_hints(func: Any) -> dict[str, Any]:
    """Keyword parameters of a callable (or a class's __init__) with their resolved annotations."""
    target = func.__init__ if inspect.isclass(func) else func
    hints = typing.get_type_hints(target)
    params = inspect.signature(target).parameters
    skip = {"self", "feature_map"}
    return {
        name: hints.get(name, Any)
        for name, p in params.items()
        if name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


@functools.cache
def _dataclass_fields(cls: type) -> tuple[dict[str, Any], list[str]]:
    """A dataclass's init fields with their resolved annotations, and the required ones (resolved once:
    `typing.get_type_hints` evaluates every annotation anew, the cost of reading a results store)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    return fields, required


def build_dataclass(cls: type, values: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a YAML mapping with key and type checking."""
    fields, required = _dataclass_fields(cls)
    checked = check_kwargs(values, fields, where)
    missing = [name for name in required if name not in checked]
    if missing:
        raise CtrbenchError(f"{where}: missing key {missing[0]!r}; the section needs: {', '.join(required)}")
    return cls(**checked)


def parse_overrides(assignments: list[str], sections: Sequence[str] = ("model", "train")) -> dict[str, dict[str, Any]]:
    """`--set` assignments by section: `["train.epochs=3", "model.embedding_dim=32"]` ->
    {"model": {"embedding_dim": 32}, "train": {"epochs": 3}}. Values are YAML (`[8, 8]`, `null`, `{a: 1}`).

    `model.KEY` is a model constructor argument and `train.KEY` a training setting, in every command
    (the distributed track maps its own keys onto these two sections: `ctrbench.distributed.config`).
    """
    overrides: dict[str, dict[str, Any]] = {section: {} for section in sections}
    for item in assignments:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name or section not in overrides:
            expected = " or ".join(f"{section}.KEY=VALUE" for section in sections)
            raise CtrbenchError(f"--set {item!r}: expected {expected}")
        try:
            overrides[section][name] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise CtrbenchError(f"--set {item!r}: the value is not valid YAML ({problem})") from None
    return overrides
