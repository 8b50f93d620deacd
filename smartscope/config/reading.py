"""Reading files a person or a program hands over: YAML and JSON, bounded before they are built.

A YAML alias shares one node; expanded (pydantic validation and ``yaml.safe_dump`` expand
them), nine aliases of nine aliases of ... (the "billion laughs") make gigabytes out of a
kilobyte, and PyYAML's composer and Python's JSON decoder recurse once per level of
nesting, so a deep document ends in a RecursionError. :func:`load_yaml` and
:func:`load_json` refuse such input with a :class:`ReadError` naming the file, before any
of it is built: a file over ``max_bytes``, bytes that are not UTF-8 text, nesting deeper
than :data:`MAX_DEPTH`, more than :data:`MAX_ALIASES` alias uses, a recursive alias, or a
document that would expand to more than :data:`MAX_NODES` nodes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from smartscope.exceptions import SmartscopeError, UserError

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_NODES", "ReadError", "load_json", "load_yaml", "read_text"]

MAX_DEPTH = 100  # nesting of mappings and lists
MAX_ALIASES = 1000  # alias uses (*name) in one document
MAX_NODES = 1_000_000  # nodes of the document with every alias expanded
MAX_TEXT_BYTES = 16 << 20  # a configuration, a plan, a manifest


class ReadError(UserError, ValueError):
    """A file cannot be read as what it should be; the message names it and says why."""


def read_text(path: Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A text file, refused before reading when it is larger than ``max_bytes`` or not UTF-8."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ReadError(f"{path}: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise ReadError(f"{path}: {size} bytes; a file of this kind is at most {max_bytes}")
    return _decode(path.read_bytes(), str(path))


def _decode(raw: bytes, source: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReadError(
            f"{source}: not a UTF-8 text file (byte {exc.start} is 0x{raw[exc.start]:02x})"
        ) from None
    if "\x00" in text:
        raise ReadError(f"{source}: not a text file (it holds NUL bytes)")
    return text


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting depth and aliases while it composes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} YAML aliases")
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Refused(SmartscopeError):
    """A bound was hit while composing (becomes a :class:`ReadError` with the source)."""


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded (a shared node counts each time it is
    used), without expanding it; ``_Refused`` for a recursive alias or more than MAX_NODES."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_NODES:
                raise _Refused(f"expands to more than {MAX_NODES} nodes (YAML aliases)")
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Refused("a YAML alias refers to itself")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size[id(root)]


def load_yaml(text: str, source: str) -> Any:
    """One YAML document (``None`` when empty), within the bounds of the module doc."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node)
        return loader.construct_document(node)
    except _Refused as exc:
        raise ReadError(f"{source}: {exc}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ReadError(f"{source}: {where}not valid YAML ({getattr(err, 'problem', None) or err})") from None
    finally:
        loader.dispose()


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings skipped)."""
    depth = deepest = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def load_json(raw: bytes | str, source: str, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """A JSON document within ``max_bytes`` and :data:`MAX_DEPTH` (checked before decoding)."""
    if len(raw) > max_bytes:
        raise ReadError(f"{source}: {len(raw)} bytes; a file of this kind is at most {max_bytes}")
    text = raw if isinstance(raw, str) else _decode(raw, source)
    if json_depth(text) > MAX_DEPTH:
        raise ReadError(f"{source}: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReadError(f"{source}: not valid JSON ({exc})") from None
