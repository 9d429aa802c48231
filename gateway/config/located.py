"""YAML that remembers the line of every key and list item, and problems located by them.

marshmallow reports problems keyed by field name and list index; walking those keys through
the loaded nodes turns each into ``FILE:LINE: path: message``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Optional

import yaml

from gateway.config.model import ConfigError, ConfigProblem


class LineMap(dict):
    """A YAML mapping remembering its own line, each key's line and any repeated keys."""

    line: Optional[int]
    lines: dict
    duplicates: list  # (key, line, first line)

    @classmethod
    def empty(cls, line: Optional[int]) -> "LineMap":
        result = cls()
        result.line, result.lines, result.duplicates = line, {}, []
        return result


class LineList(list):
    """A YAML sequence remembering its own line and each item's line."""

    line: Optional[int]
    lines: list

    @classmethod
    def empty(cls) -> "LineList":
        result = cls()
        result.line, result.lines = None, []
        return result


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false (True, TRUE, False, FALSE) are booleans.

    YAML 1.1 also reads yes/no/on/off/y/n as booleans, so ``key: no`` became ``False`` and
    failed as "Not a valid string" (the "Norway problem").  Those words now stay strings, which
    boolean options still accept (marshmallow's ``fields.Boolean``, and a route's ``continue``).
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {  # a copy without the bool resolver; yaml.SafeLoader is untouched
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    explicit = {id(key_node) for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # `<<: *anchor` merges come first; explicit keys may override them
    result = LineMap.empty(node.start_mark.line + 1)
    seen: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            ) from None
        line = key_node.start_mark.line + 1
        if id(key_node) in explicit:
            if key in seen:
                result.duplicates.append((key, line, seen[key]))
            seen[key] = line
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line, result.lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_yaml(text: str, path: str) -> Any:
    """The document with line numbers; a syntax error is a ``ConfigError`` at its line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or str(exc)
        if exc.context and exc.problem:
            message = f"{exc.problem} ({exc.context})"
        raise ConfigError([ConfigProblem(path, mark.line + 1 if mark else None, "yaml", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(path, None, "yaml", str(exc))]) from None


Order = Callable[[str, Any, Any], Any]


class Problems:
    """Collects problems; a path that already failed (e.g. an unset variable) reports once."""

    def __init__(self, file: str):
        self.file = file
        self.items: list[ConfigProblem] = []
        self.settled: set[str] = set()

    def add(self, line: Optional[int], path: str, message: str, *, final: bool = False) -> None:
        if path in self.settled:
            return
        self.items.append(ConfigProblem(self.file, line, path, message))
        if final:
            self.settled.add(path)

    def report(self, messages: Any, node: Any, path: str, line: Optional[int], order: Optional[Order] = None) -> None:
        """Turn marshmallow's nested messages (field names, list indexes) into located problems.

        ``order(path, node, key)`` sorts the problems of one node (they may share a line); by
        default they come in marshmallow's order.
        """
        if isinstance(messages, dict):
            items = sorted(messages.items(), key=lambda item: order(path, node, item[0])) if order else messages.items()
            for key, sub in items:
                if key == "_schema":
                    self.report(sub, node, path, line, order)
                    continue
                child, child_line = child_of(node, key)
                in_list = isinstance(node, LineList) or (not isinstance(node, LineMap) and isinstance(key, int))
                self.report(sub, child, join(path, key, in_list), child_line or line, order)
        elif isinstance(messages, (list, tuple)):
            for message in messages:
                self.report(message, node, path, line, order)
        else:
            self.add(line, path, str(messages))

    def in_file_order(self) -> list[ConfigProblem]:
        return sorted(self.items, key=lambda p: (p.line is None, p.line or 0))


def position(node: Any, key: Any) -> int:
    """Where ``key`` is in ``node``, so that problems on one line come in the file's order."""
    if key == "_schema":
        return -1
    if isinstance(node, LineMap):
        return next((i for i, k in enumerate(node) if k == key), len(node))
    return key if isinstance(key, int) else 0


def join(path: str, key: Any, in_list: bool) -> str:
    if in_list:
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def child_of(node: Any, key: Any) -> tuple[Any, Optional[int]]:
    """The value under ``key`` in a loaded node, and its line (None when unknown)."""
    if isinstance(node, LineMap):
        return node.get(key), node.lines.get(key, node.line)
    if isinstance(node, LineList) and isinstance(key, int) and 0 <= key < len(node):
        return node[key], node.lines[key]
    return None, getattr(node, "line", None)


def as_list(value: Any) -> Optional[LineList]:
    """A YAML list, an empty list for a key left empty (everything below commented out), else None."""
    if value is None:
        return LineList.empty()
    return value if isinstance(value, LineList) else None
