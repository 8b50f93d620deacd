"""Reading, validating and writing run configurations.

:func:`load_config` turns pydantic's errors into one line per problem, each naming the
field path (``acquisition.exposure_ms``) and the reason (:class:`ConfigError`).
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from smartscope.config.reading import ReadError, load_yaml, read_text
from smartscope.config.run import SmartscopeConfig
from smartscope.exceptions import UserError

__all__ = [
    "ConfigError",
    "dump_config",
    "example_config_text",
    "format_validation_error",
    "load_config",
    "validate_config",
]


class ConfigError(UserError, ValueError):
    """A configuration is unusable; ``problems`` lists ``field.path: reason`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid configuration {source}:\n  " + "\n  ".join(problems))


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """``('controllers', 0, 'exposure_band', 'low')`` -> ``controllers[0].low``.

    A discriminated union adds its tag to the location; it is dropped when it is just
    the ``kind`` of the item at that point.
    """
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, Mapping) and node.get("kind") == part and part not in node:
            continue
        out += f".{part}" if out else part
        node = node.get(part) if isinstance(node, Mapping) else None
    return out or "(top level)"


def format_validation_error(err: ValidationError, data: Any = None) -> list[str]:
    """One ``field.path: reason (got value)`` line per problem pydantic found."""
    lines = []
    for e in err.errors():
        path = _field_path(tuple(e["loc"]), data)
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        if path == "(top level)" and re.match(r"^[\w\[\].]+: ", msg):
            lines.append(msg)  # a cross-field check that names its own field
        else:
            lines.append(f"{path}: {msg}{shown}")
    return lines


def validate_config(data: Mapping[str, Any] | None, source: str = "<dict>") -> SmartscopeConfig:
    """Validate a mapping (e.g. parsed YAML); raise :class:`ConfigError` on any problem."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        return SmartscopeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, format_validation_error(err, data)) from None


def load_config(path: str | Path) -> SmartscopeConfig:
    """Read and validate a YAML config file (size, nesting and aliases bounded: see
    :mod:`smartscope.config.reading`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), ["file not found"])
    try:
        data = load_yaml(read_text(p), str(p))
    except ReadError as err:
        raise ConfigError(str(p), [str(err).removeprefix(f"{p}: ")]) from None
    return validate_config(data, str(p))


def dump_config(cfg: SmartscopeConfig) -> str:
    """The config as YAML, exactly as it will run (defaults filled in)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def example_config_text() -> str:
    """The commented example shipped with the package (``smartscope config --example``)."""
    return (importlib.resources.files("smartscope") / "example_config.yaml").read_text("utf-8")
