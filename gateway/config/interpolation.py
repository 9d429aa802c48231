"""``${VAR}`` in gateway.yaml: secrets come from the environment, never from the file."""
from __future__ import annotations

import re
from typing import Any, Mapping

from gateway.config.located import LineList, LineMap, Problems, child_of, join

_REFERENCE = re.compile(r"\$(?:\$|\{(?P<body>[^}]*)\}|\{)")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default also when VAR is empty); ``$$`` is ``$``."""

    def expand(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        body = match.group("body")
        if body is None:
            raise ValueError("unterminated '${' (write '$$' for a literal '$')")
        name, has_default, default = body.partition(":-")
        if not _VARIABLE.fullmatch(name):
            raise ValueError(f"invalid variable reference '${{{body}}}'")
        value = env.get(name)
        if has_default and not value:
            return default
        if value is None:
            raise ValueError(f"environment variable {name} is not set")
        return value

    return _REFERENCE.sub(expand, text)


def interpolate_tree(node: Any, path: str, env: Mapping[str, str], problems: Problems) -> None:
    """Expand variables in every string value in place, keeping the original lines.

    A value that becomes empty through a variable (``${TOKEN:-}``) is removed from its
    mapping, so the option counts as not set.  Repeated keys are reported here, on the one
    walk through every mapping.
    """
    if not isinstance(node, (LineMap, LineList)):
        return
    if isinstance(node, LineMap):
        for key, line, first in node.duplicates:
            problems.add(line, join(path, key, False), f"duplicate key '{key}' (first on line {first})")
        keys = list(node)
    else:
        keys = range(len(node))
    for key in keys:
        value = node[key]
        sub_path = join(path, key, isinstance(node, LineList))
        if not isinstance(value, str):
            interpolate_tree(value, sub_path, env, problems)
            continue
        try:
            expanded = interpolate(value, env)
        except ValueError as exc:
            problems.add(child_of(node, key)[1], sub_path, str(exc), final=True)
            expanded = ""
        if expanded == "" and value != "" and isinstance(node, LineMap):
            del node[key]
        else:
            node[key] = expanded
