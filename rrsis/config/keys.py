"""What each config key expects, read from the schema dataclasses: its type, default, and an example.

Used by `load_config` for two things OmegaConf does not do: a scalar given for a list key becomes a one-item
list (`input=scene.tif` means `input=[scene.tif]`), and a value of the wrong shape or type is reported in one
line that names the key, what it expects and a valid example (`e.g. tiling.tile_px=512`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from rrsis.errors import ConfigError


@dataclass(frozen=True)
class KeySpec:
    """One schema field: its dotted key, resolved type, default value and allowed values (if a choice)."""

    key: str
    hint: Any
    default: Any
    choices: tuple[Any, ...] = ()


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return hint


def _fields(schema: Any) -> dict[str, tuple[Any, dataclasses.Field[Any]]]:
    hints = typing.get_type_hints(schema)
    return {f.name: (_strip_optional(hints.get(f.name, Any)), f) for f in dataclasses.fields(schema)}


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def is_list(hint: Any) -> bool:
    return typing.get_origin(hint) in (list, tuple) or hint in (list, tuple)


def key_spec(schema: Any, key: str) -> KeySpec | None:
    """The field `key` (dotted) of `schema`, or None when no such field exists."""
    node_type: Any = schema
    node_default: Any = schema()
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not _is_section(node_type):
            return None
        table = _fields(node_type)
        if part not in table:
            return None
        hint, f = table[part]
        default = getattr(node_default, part, None)
        if depth == len(parts) - 1:
            return KeySpec(key, hint, default, tuple(f.metadata.get("choices", ())))
        node_type, node_default = hint, default
    return None


def expects(hint: Any) -> str:
    """What a value of type `hint` looks like, in words."""
    if is_list(hint):
        return "a list"
    if _is_section(hint):
        return "a section of keys"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    return names.get(hint, "a mapping" if typing.get_origin(hint) is dict or hint is dict else str(hint))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def example(spec: KeySpec) -> str:
    """A valid `key=value` override for the field, built from its default (or its type when that is empty)."""
    hint, default = spec.hint, spec.default
    if is_list(hint):
        items = list(default or [])[:2]
        if not items:
            args = typing.get_args(hint)
            samples: dict[Any, list[Any]] = {int: [1, 2], float: [0.5, 1.0]}
            items = samples.get(args[0] if args else str, ["a", "b"])
        return f"{spec.key}=[{','.join(_scalar(v) for v in items)}]"
    if _is_section(hint):
        for name, (sub_hint, f) in _fields(hint).items():
            if not _is_section(sub_hint):
                choices = tuple(f.metadata.get("choices", ()))
                return example(KeySpec(f"{spec.key}.{name}", sub_hint, getattr(default, name, None), choices))
        return f"{spec.key}.<key>=<value>"
    if spec.choices:
        return f"{spec.key}={_scalar(default if default in spec.choices else spec.choices[0])}"
    if hint is str and not default:
        return f"{spec.key}=<text>"
    return f"{spec.key}={_scalar(default)}"


def mismatch(source: str, spec: KeySpec, value: Any = None, *, shown: bool = True) -> ConfigError:
    """One line: the key, what it expects, what it got, and a valid example."""
    got = f", got {value!r}" if shown else ""
    what = f"key '{spec.key}' expects {expects(spec.hint)}{got}"
    return ConfigError(f"config error ({source}): {what}; e.g. {example(spec)}")


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def lists_from_scalars(layer: dict[str, Any], schema: Any, source: str, prefix: str = "", root: Any = None) -> None:
    """In place: wrap a scalar given for a list key as a one-item list (empty -> []); refuse wrong shapes.

    A list key given a mapping, a section given a scalar, and a scalar key given a list or mapping raise one
    `ConfigError` line. Unknown keys are left for the merge to report (it lists the allowed keys).
    """
    if not _is_section(schema):
        return
    root = schema if root is None else root
    table = _fields(schema)
    for name, value in list(layer.items()):
        if name not in table or _is_interpolation(value) or value == "???":
            continue
        hint = table[name][0]
        key = f"{prefix}{name}"
        if is_list(hint):
            if isinstance(value, dict):
                raise _mismatch_at(source, root, key, value)
            if not isinstance(value, list):
                layer[name] = [] if value in (None, "") else [value]  # `bands=` clears the list
        elif value is None:
            continue  # the merge names the key if it is not optional
        elif _is_section(hint):
            if not isinstance(value, dict):
                raise _mismatch_at(source, root, key, value)
            lists_from_scalars(value, hint, source, prefix=f"{key}.", root=root)
        elif hint in (bool, int, float, str) and isinstance(value, (list, dict)):
            raise _mismatch_at(source, root, key, value)


def _mismatch_at(source: str, root: Any, key: str, value: Any) -> ConfigError:
    spec = key_spec(root, key)
    assert spec is not None  # `key` was found by walking the same schema
    return mismatch(source, spec, value)
