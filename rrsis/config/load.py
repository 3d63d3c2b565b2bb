"""Load a job config: schema defaults <- YAML file <- `key.sub=value` overrides, then validate.

Every failure becomes one `ConfigError` line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from rrsis.config.fields import describe_range, in_range
from rrsis.errors import ConfigError

T = TypeVar("T")


def _allowed_keys(schema: Any, full_key: str) -> list[str]:
    """Names of the fields of the dataclass that owns `full_key` (for the error line)."""
    node: Any = schema()
    for part in full_key.split(".")[:-1]:
        node = getattr(node, part, None)
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _omegaconf_error(exc: OmegaConfBaseException, schema: Any, source: str) -> ConfigError:
    key = str(getattr(exc, "full_key", "") or getattr(exc, "key", "") or "?")
    msg = str(getattr(exc, "msg", "") or exc).strip().splitlines()[0]
    if isinstance(exc, ConfigKeyError) and "not in" in msg:
        allowed = _allowed_keys(schema, key)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return ConfigError(f"config error ({source}): unknown key '{key}'{hint}")
    if isinstance(exc, ValidationError):
        return ConfigError(f"config error ({source}): key '{key}': {msg}")
    return ConfigError(f"config error ({source}): key '{key}': {msg}")


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
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"config error: override {bad[0]!r} must look like key.sub=value")
        try:
            layers.append(("overrides", OmegaConf.from_dotlist(list(overrides))))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"config error: cannot parse overrides: {exc}") from exc
    merged = base
    for source, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)  # type: ignore[assignment]
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
