"""Load a job config: schema defaults <- YAML file <- `key.sub=value` overrides, then validate.

A scalar given for a list key is a one-item list (`input=scene.tif`). Every failure becomes one `ConfigError`
line naming the key, the value and what is allowed, or a valid example; OmegaConf's own messages never reach
the user as they are.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from rrsis.config.keys import example, key_spec, lists_from_scalars, mismatch
from rrsis.errors import ConfigError
from rrsis.fields import describe_range, in_range

T = TypeVar("T")


def _allowed_keys(schema: Any, full_key: str) -> list[str]:
    """Names of the fields of the dataclass that owns `full_key` (for the error line)."""
    node: Any = schema()
    for part in full_key.split(".")[:-1]:
        node = getattr(node, part, None)
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _omegaconf_error(exc: OmegaConfBaseException, schema: Any, source: str) -> ConfigError:
    """One line in our words: the key, what it expects, what it got (when known), a valid example."""
    key = str(getattr(exc, "full_key", "") or getattr(exc, "key", "") or "")
    msg = _first_line(str(getattr(exc, "msg", "") or exc))
    if isinstance(exc, ConfigKeyError) and "not in" in msg:
        allowed = _allowed_keys(schema, key)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return ConfigError(f"config error ({source}): unknown key '{key}'{hint}")
    spec = key_spec(schema, key) if key else None
    if spec is None:
        where = f"key '{key}'" if key else "a value"
        return ConfigError(f"config error ({source}): {where} cannot be used: {msg}")
    if isinstance(exc, MissingMandatoryValue):
        return ConfigError(f"config error ({source}): key '{key}' has no value; set it, e.g. {example(spec)}")
    if isinstance(exc, InterpolationResolutionError):
        reason = re.sub(r"^\w+ raised while resolving interpolation: ", "", msg)
        what = f"key '{key}': cannot resolve its ${{...}} ({reason})"
        return ConfigError(f"config error ({source}): {what}; e.g. {example(spec)}")
    found = _GOT.search(msg)
    if found:
        return mismatch(source, spec, found.group(1))
    return mismatch(source, spec, shown=False)


_GOT = re.compile(r"Value '(.*?)' (?:of type|is not)")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def _override_layer(overrides: list[str], schema: Any) -> DictConfig:
    """The overrides as one layer; an override that does not parse is named with a valid example."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"config error: override {bad[0]!r} must look like key.sub=value")
    for override in overrides:
        try:
            OmegaConf.from_dotlist([override])
        except Exception as exc:  # yaml and grammar errors come in many types
            key = override.split("=", 1)[0]
            spec = key_spec(schema, key)
            eg = f"; e.g. {example(spec)}" if spec is not None else ""
            reason = _first_line(str(exc) or type(exc).__name__)
            raise ConfigError(f"config error: override {override!r} cannot be parsed ({reason}){eg}") from exc
    return OmegaConf.from_dotlist(list(overrides))


def _shaped(layer: DictConfig, schema: Any, source: str) -> DictConfig:
    """`layer` with scalars for list keys wrapped as one-item lists (wrong shapes refused in one line)."""
    container = OmegaConf.to_container(layer, resolve=False)
    assert isinstance(container, dict)
    data = {str(k): v for k, v in container.items()}
    lists_from_scalars(data, schema, source)
    return OmegaConf.create(data)


def validate(obj: Any, prefix: str = "") -> None:
    """Walk a config dataclass and check the `choice`/`bounded`/`items` rules and `validate()` hooks."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            allowed = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(f"config error: key '{key}': value {value!r} is not allowed; allowed: {allowed}")
        if "item_choices" in meta:
            for item in value:
                if item not in meta["item_choices"]:
                    allowed = ", ".join(repr(c) for c in meta["item_choices"])
                    raise ConfigError(f"config error: key '{key}': item {item!r} is not allowed; allowed: {allowed}")
        if "range" in meta and not in_range(value, meta["range"]):
            raise ConfigError(
                f"config error: key '{key}': value {value!r} is out of range; allowed: {describe_range(meta['range'])}"
            )
        if dataclasses.is_dataclass(value):
            validate(value, prefix=f"{key}.")
    hook = getattr(obj, "validate", None)
    if callable(hook):
        hook(prefix)


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build a validated config object of type `schema`."""
    try:
        base: DictConfig = OmegaConf.structured(schema)
    except OmegaConfBaseException as exc:  # a schema bug, not a user error
        raise ConfigError(f"config schema {schema.__name__} is invalid: {exc}") from exc
    layers: list[tuple[str, Any]] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config error: file not found: {p}")
        try:
            data = OmegaConf.load(p)
        except Exception as exc:  # yaml syntax errors come in many types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"config error: {p} is not valid YAML: {first}") from exc
        if not isinstance(data, DictConfig):
            raise ConfigError(f"config error: {p} must hold a mapping at the top level")
        layers.append((str(p), data))
    if overrides:
        layers.append(("overrides", _override_layer(list(overrides), schema)))
    merged = base
    for source, layer in layers:
        try:
            merged = OmegaConf.merge(merged, _shaped(layer, schema, source))  # type: ignore[assignment]
        except OmegaConfBaseException as exc:
            raise _omegaconf_error(exc, schema, source) from exc
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc, schema, "resolved config") from exc
    validate(obj)
    return obj  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Any) -> dict[str, Any]:
    out = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(out, dict)
    return out  # type: ignore[return-value]
