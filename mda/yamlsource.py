"""YAML documents that remember where each value came from.

Operators fix configuration errors by line number, so every value loaded here can be traced back to
``FILE:LINE``. The loader is PyYAML's safe loader; on top of it we walk the node tree once and record the
line of every mapping key and sequence item under its path (``("listeners", 0, "bind")``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


class ConfigError(Exception):
    """A configuration problem, shown to the operator as ``FILE:LINE: KEY: problem``."""

    def __init__(self, file: str, line: int | None, key: str, problem: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.problem = problem
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def format_path(path: PathKey) -> str:
    """Render ``("listeners", 0, "bind")`` as ``listeners[0].bind``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass
class Document:
    """Loaded YAML data plus the line of every key, for error messages."""

    name: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    raw: bytes = b""
    """The bytes parsed (files only): the version of the configuration that was read, see config.load."""

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: PathKey, problem: str) -> ConfigError:
        return ConfigError(self.name, self.line_of(path), format_path(path), problem)


class _StrictLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys: the second of two entries silently winning is a trap."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _record_lines(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, str(key_node.value))
            lines[key_path] = key_node.start_mark.line + 1
            _record_lines(value_node, key_path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            lines[item_path] = item.start_mark.line + 1
            _record_lines(item, item_path, lines)


def load_text(text: str, name: str) -> Document:
    """Parse YAML text; syntax errors become a ``ConfigError`` with the line."""
    if "\x00" in text:
        raise ConfigError(name, None, "", "file contains a NUL byte")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(name, line, "", f"invalid YAML: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(name, None, "", f"invalid YAML: {error}") from None
    finally:
        loader.dispose()
    lines: dict[PathKey, int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return Document(name=name, data=data, lines=lines)


def load_file(path: Path) -> Document:
    """Read and parse a YAML file; unreadable or non-UTF-8 files are ``ConfigError`` too."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(str(path), None, "", f"cannot read: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(str(path), line, "", "file is not valid UTF-8") from None
    return replace(load_text(text, str(path)), raw=raw)
