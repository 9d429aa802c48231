"""Loads and checks the operator's ``config/gateway.yaml``.

The file reads top to bottom like Alertmanager's: ``global`` → ``sources`` (webhook
URLs) → ``sinks`` (destinations) → ``route`` (who gets what).  Checking is strict and
reports every problem at once, each as ``FILE:LINE: path: message``: a YAML loader that
remembers the line of every key and list item lets marshmallow's field-keyed messages
(and our own route checks) point back into the file.

Sources created at runtime through the API pass through the same per-source check
(``validate_source``), so file and API sources obey identical rules.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from gateway.contracts import SEVERITIES, STATUSES
from gateway.fields import Duration, Size, parse_duration
from gateway.plugins import Registry

DEFAULT_PATH = "config/gateway.yaml"
DEFAULT_RETENTION = 30 * 86400.0
DEFAULT_MAX_BODY_SIZE = 1024 * 1024

TOP_LEVEL_KEYS = ("global", "sources", "sinks", "route")
ROUTE_KEYS = ("match", "sinks", "continue", "reopen_window", "routes")
MATCH_KEYS = ("source", "source_type", "severity", "status")


# --- the loaded configuration ------------------------------------------------------


class Options(dict):
    """A source's or sink's validated options; knows which are secrets and hides them in repr.

    ``repr`` of a config ends up in logs and tracebacks, so secrets never show there.
    """

    def __init__(self, values: Mapping[str, Any] = (), secret_keys: frozenset[str] = frozenset()):
        super().__init__(values)
        self.secret_keys = frozenset(secret_keys)

    def redacted(self) -> dict:
        return {k: _mask(v) if k in self.secret_keys else v for k, v in self.items()}

    def __repr__(self) -> str:
        return f"Options({self.redacted()!r})"


@dataclass(frozen=True)
class SourceConfig:
    """A source from the file (``origin="file"``) or the API; build it with ``validate_source``
    so that ``options`` knows its secrets."""

    key: str
    type: str
    name: str
    enabled: bool
    options: dict
    line: Optional[int]
    origin: str = "file"


@dataclass(frozen=True)
class SinkConfig:
    name: str
    type: str
    options: dict
    line: Optional[int]


@dataclass(frozen=True)
class Route:
    """One routing node; ``sinks`` and ``reopen_window`` are already inherited from the parent."""

    match: Mapping[str, tuple[str, ...]]
    sinks: tuple[str, ...]
    continue_: bool
    reopen_window: Optional[float]
    routes: tuple["Route", ...]
    line: Optional[int]


@dataclass(frozen=True)
class GatewayConfig:
    path: str
    sources: dict[str, SourceConfig]
    sinks: dict[str, SinkConfig]
    route: Route
    retention: float
    max_body_size: int
    loaded_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: Optional[int]
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}"


class ConfigError(Exception):
    """The file is invalid; ``problems`` lists everything wrong with it, in file order."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


# --- secrets ---------------------------------------------------------------------------


def secret_fields(schema_cls: type[Schema]) -> set[str]:
    """Names (as loaded) of the schema's fields marked ``metadata={"secret": True}``."""
    return {name for name, f in schema_cls().fields.items() if f.metadata.get("secret")}


def _mask(value: Any) -> Optional[str]:
    return None if value is None else "***"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def redacted_options(options: Mapping[str, Any], schema_cls: Optional[type[Schema]] = None) -> dict:
    """Options as JSON with secrets masked; plain dicts (as stored for API sources) by ``schema_cls``."""
    if not isinstance(options, Options):
        options = Options(options, frozenset(secret_fields(schema_cls)) if schema_cls else frozenset())
    return _jsonable(options.redacted())


def redacted_source(source: SourceConfig) -> dict:
    """One source as JSON, secrets masked (``"***"``, or ``None`` when unset)."""
    return {
        "key": source.key, "type": source.type, "name": source.name, "enabled": source.enabled,
        "origin": source.origin, "line": source.line, "options": redacted_options(source.options),
    }


def route_dict(route: Route) -> dict:
    """The route tree as JSON (routes hold no secrets)."""
    return {
        "match": {k: list(v) for k, v in route.match.items()},
        "sinks": list(route.sinks),
        "continue": route.continue_,
        "reopen_window": route.reopen_window,
        "line": route.line,
        "routes": [route_dict(r) for r in route.routes],
    }


def redacted(config: GatewayConfig) -> dict:
    """The whole config as JSON for the API and CLI, every secret option masked."""
    return {
        "path": config.path,
        "loaded_at": config.loaded_at.isoformat(),
        "global": {"retention": config.retention, "max_body_size": config.max_body_size},
        "sources": [redacted_source(s) for s in config.sources.values()],
        "sinks": [
            {"name": s.name, "type": s.type, "line": s.line, "options": redacted_options(s.options)}
            for s in config.sinks.values()
        ],
        "route": route_dict(config.route),
    }


def count_routes(route: Route) -> int:
    """Routes below ``route``, recursively (the root itself is not counted)."""
    return sum(1 + count_routes(child) for child in route.routes)


def summary(config: GatewayConfig) -> str:
    """One line for ``config check``: ``OK: 2 sources, 2 sinks, 3 routes``."""

    def n(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 's'}"

    return (
        f"OK: {n(len(config.sources), 'source')}, {n(len(config.sinks), 'sink')}, "
        f"{n(count_routes(config.route), 'route')}"
    )


# --- YAML with line numbers ------------------------------------------------------------


class _Map(dict):
    """A YAML mapping remembering its own line, each key's line and any repeated keys."""

    line: int
    lines: dict
    duplicates: list  # (key, line, first line)


class _Seq(list):
    """A YAML sequence remembering its own line and each item's line."""

    line: int
    lines: list


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


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    explicit = {id(key_node) for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # `<<: *anchor` merges come first; explicit keys may override them
    result = _Map()
    result.line, result.lines, result.duplicates = node.start_mark.line + 1, {}, []
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


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    result.line, result.lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


# --- problems, with paths and lines ------------------------------------------------------


class _Problems:
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

    def in_file_order(self) -> list[ConfigProblem]:
        return sorted(self.items, key=lambda p: (p.line is None, p.line or 0))


def _join(path: str, key: Any, in_list: bool) -> str:
    if in_list:
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _child(node: Any, key: Any) -> tuple[Any, Optional[int]]:
    """The value under ``key`` in a loaded node, and its line (None when unknown)."""
    if isinstance(node, _Map):
        return node.get(key), node.lines.get(key, node.line)
    if isinstance(node, _Seq) and isinstance(key, int) and 0 <= key < len(node):
        return node[key], node.lines[key]
    return None, getattr(node, "line", None)


def _report(problems: _Problems, messages: Any, node: Any, path: str, line: Optional[int]) -> None:
    """Turn marshmallow's nested messages (field names, list indexes) into located problems."""
    if isinstance(messages, dict):
        for key, sub in messages.items():
            if key == "_schema":
                _report(problems, sub, node, path, line)
                continue
            child, child_line = _child(node, key)
            in_list = isinstance(node, _Seq) or (not isinstance(node, _Map) and isinstance(key, int))
            _report(problems, sub, child, _join(path, key, in_list), child_line or line)
    elif isinstance(messages, (list, tuple)):
        for message in messages:
            _report(problems, message, node, path, line)
    else:
        problems.add(line, path, str(messages))


# --- ${VAR} interpolation ------------------------------------------------------------------

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


def _interpolate_tree(node: Any, path: str, env: Mapping[str, str], problems: _Problems) -> None:
    """Expand variables in every string value in place, keeping the original lines.

    A value that becomes empty through a variable (``${TOKEN:-}``) is removed from its
    mapping, so the option counts as not set.
    """
    if not isinstance(node, (_Map, _Seq)):
        return
    if isinstance(node, _Map):
        for key, line, first in node.duplicates:
            problems.add(line, _join(path, key, False), f"duplicate key '{key}' (first on line {first})")
        keys = list(node)
    else:
        keys = range(len(node))
    for key in keys:
        value = node[key]
        sub_path = _join(path, key, isinstance(node, _Seq))
        if not isinstance(value, str):
            _interpolate_tree(value, sub_path, env, problems)
            continue
        try:
            expanded = interpolate(value, env)
        except ValueError as exc:
            problems.add(_child(node, key)[1], sub_path, str(exc), final=True)
            expanded = ""
        if expanded == "" and value != "" and isinstance(node, _Map):
            del node[key]
        else:
            node[key] = expanded


# --- sources and sinks ---------------------------------------------------------------------

NAME = r"[A-Za-z0-9._-]{1,64}"
"""Source keys and sink names: they appear in URLs and metric labels."""
NAME_PATTERN = re.compile(rf"^{NAME}\Z")
_NAME = validate.Regexp(NAME_PATTERN, error="must be 1-64 characters of A-Z a-z 0-9 . _ -")


_NOT_A_PATH_SEGMENT = validate.NoneOf((".", ".."), error="must not be . or .. (a URL cannot carry it)")


class _SourceFields(Schema):
    key = fields.String(required=True, validate=[_NAME, _NOT_A_PATH_SEGMENT])
    type = fields.String(required=True)
    name = fields.String(load_default=None, allow_none=True)
    enabled = fields.Boolean(load_default=True)


class _SinkFields(Schema):
    name = fields.String(required=True, validate=_NAME)
    type = fields.String(required=True)


def _check_entry(kind: str, own_schema: type[Schema], types: Mapping[str, type], data: Any):
    """Validate a source or sink: its own fields, then everything else by its type's options schema.

    Returns ``(own fields, Options or None, marshmallow-style errors)``.
    """
    if not isinstance(data, Mapping):
        return {}, None, {"_schema": [f"a {kind} must be a mapping"]}
    own_names = set(own_schema().fields)
    errors: dict = {}
    try:
        own = own_schema().load({k: v for k, v in data.items() if k in own_names})
    except ValidationError as exc:
        own, errors = exc.valid_data or {}, dict(exc.messages)
    type_name = own.get("type")
    cls = types.get(type_name)
    if type_name is not None and cls is None:
        registered = ", ".join(sorted(types)) or "none"
        errors["type"] = [f"unknown {kind} type '{type_name}' (registered: {registered})"]
    if cls is None:
        return own, None, errors
    schema = cls.options_schema(unknown=RAISE)
    try:
        options = schema.load({k: v for k, v in data.items() if k not in own_names})
    except ValidationError as exc:
        known = ", ".join(sorted(own_names | {f.data_key or n for n, f in schema.load_fields.items()}))
        unknown = schema.error_messages["unknown"]
        for key, messages in exc.messages.items():
            is_unknown = messages == [unknown]
            errors[key] = [f"unknown option for {kind} type '{type_name}' (known: {known})"] if is_unknown else messages
        return own, None, errors
    return own, Options(options, frozenset(secret_fields(cls.options_schema))), errors


def _source(registry: Registry, data: Any, origin: str, line: Optional[int]):
    own, options, errors = _check_entry("source", _SourceFields, registry.source_types, data)
    if errors:
        return None, errors
    source = SourceConfig(
        key=own["key"], type=own["type"], name=own["name"] or own["key"], enabled=own["enabled"],
        options=options, line=line, origin=origin,
    )
    return source, {}


def _sink(registry: Registry, data: Any, line: Optional[int]):
    own, options, errors = _check_entry("sink", _SinkFields, registry.sink_types, data)
    if errors:
        return None, errors
    return SinkConfig(name=own["name"], type=own["type"], options=options, line=line), {}


def validate_source(registry: Registry, data: Mapping[str, Any], origin: str = "api") -> SourceConfig:
    """Check one source created at runtime exactly as a source in the file is checked.

    Raises ``marshmallow.ValidationError`` whose messages map each bad field to its problems.
    """
    source, errors = _source(registry, data, origin, None)
    if errors:
        raise ValidationError(errors)
    return source


# --- routes ------------------------------------------------------------------------------


def _as_list(value: Any) -> Optional[_Seq]:
    """A YAML list, an empty list for a key left empty (everything below commented out), else None."""
    if value is None:
        empty = _Seq()
        empty.line, empty.lines = None, []
        return empty
    return value if isinstance(value, _Seq) else None


_BOOLEAN = fields.Boolean()


class _RouteChecker:
    def __init__(self, problems: _Problems, sinks: list[str], source_types: list[str]):
        self.problems = problems
        self.sinks = sinks
        self.allowed = {"severity": SEVERITIES, "status": STATUSES, "source_type": tuple(source_types)}

    def route(self, node: Any, path: str, line: Optional[int], parent: Optional[Route]) -> Optional[Route]:
        add = self.problems.add
        if not isinstance(node, _Map):
            add(line, path, "a route must be a mapping")
            return None
        for key in node:
            if key not in ROUTE_KEYS:
                add(node.lines[key], _join(path, key, False), f"unknown key (expected: {', '.join(ROUTE_KEYS)})")
        if parent is None:
            for key in ("match", "continue"):
                if key in node:
                    add(node.lines[key], f"{path}.{key}", f"the root route must not have {key}: it receives every alert")
        match = self.match(node, path) if parent is not None and "match" in node else {}

        if "sinks" in node:
            sinks = self.sink_list(node["sinks"], f"{path}.sinks", node.lines["sinks"], root=parent is None)
        elif parent is None:
            add(node.line, f"{path}.sinks", "required: the root route's sinks get every alert no child route takes")
            sinks = ()
        else:
            sinks = parent.sinks

        try:  # like `enabled`, also yes/no/on/off (strings since YAML 1.2 booleans, see _Loader)
            continue_ = _BOOLEAN.deserialize(node.get("continue", False))
        except ValidationError:
            add(node.lines["continue"], f"{path}.continue", "must be true or false")
            continue_ = False

        reopen_window = parent.reopen_window if parent else None
        if "reopen_window" in node:
            try:
                reopen_window = parse_duration(node["reopen_window"])
            except ValueError as exc:
                add(node.lines["reopen_window"], f"{path}.reopen_window", str(exc))

        this = Route(match, sinks, continue_, reopen_window, (), node.line)
        children = _as_list(node.get("routes"))
        if children is None:
            add(node.lines["routes"], f"{path}.routes", "must be a list of routes")
            return this
        built = (
            self.route(child, f"{path}.routes[{i}]", children.lines[i], this) for i, child in enumerate(children)
        )
        return Route(match, sinks, continue_, reopen_window, tuple(r for r in built if r), node.line)

    def sink_list(self, value: Any, path: str, line: int, root: bool) -> tuple[str, ...]:
        if not isinstance(value, _Seq) or not all(isinstance(name, str) for name in value):
            self.problems.add(line, path, "must be a list of sink names")
            return ()
        if root and not value:
            self.problems.add(line, path, "the root route needs at least one sink")
        defined = ", ".join(self.sinks) or "none"
        for i, name in enumerate(value):
            if name not in self.sinks:
                item = f"{path}[{i}]"
                self.problems.add(value.lines[i], item, f"undefined sink '{name}' (defined: {defined})")
        return tuple(dict.fromkeys(value))

    def match(self, node: _Map, path: str) -> dict[str, tuple[str, ...]]:
        value, path = node["match"], f"{path}.match"
        if not isinstance(value, _Map):
            self.problems.add(node.lines["match"], path, f"must be a mapping of {', '.join(MATCH_KEYS)}")
            return {}
        result = {}
        for key, raw in value.items():
            key_path, line = _join(path, key, False), value.lines[key]
            if key not in MATCH_KEYS:
                self.problems.add(line, key_path, f"unknown match key (expected: {', '.join(MATCH_KEYS)})")
                continue
            if isinstance(raw, str):
                items = [(raw, line, key_path)]
            elif isinstance(raw, _Seq) and raw and all(isinstance(v, str) for v in raw):
                items = [(v, raw.lines[i], f"{key_path}[{i}]") for i, v in enumerate(raw)]
            else:
                self.problems.add(line, key_path, "must be a string or a non-empty list of strings")
                continue
            allowed = self.allowed.get(key)
            for item, item_line, item_path in items:
                if allowed is not None and item not in allowed:
                    noun = key.replace("_", " ")
                    self.problems.add(item_line, item_path, f"'{item}' is not a {noun} (one of: {', '.join(allowed)})")
            result[key] = tuple(item for item, _, _ in items)
        return result


# --- the whole file ------------------------------------------------------------------------


class _GlobalFields(Schema):
    retention = Duration(load_default=DEFAULT_RETENTION)
    max_body_size = Size(load_default=DEFAULT_MAX_BODY_SIZE)


def _entries(doc: _Map, section: str, id_field: str, build, problems: _Problems):
    """Check each item of ``sources``/``sinks``; returns the valid ones and every declared id."""
    items = _as_list(doc.get(section))
    if items is None:
        problems.add(doc.lines[section], section, "must be a list")
        return {}, []
    valid, first_line = {}, {}
    for i, item in enumerate(items):
        path, line = f"{section}[{i}]", items.lines[i]
        config, errors = build(item, line)
        _report(problems, errors, item, path, line)
        ident = item.get(id_field) if isinstance(item, _Map) else None
        if not isinstance(ident, str):
            continue
        if ident in first_line:
            problems.add(
                item.lines[id_field], f"{path}.{id_field}",
                f"duplicate {section[:-1]} {id_field} '{ident}' (first defined on line {first_line[ident]})",
            )
        else:
            first_line[ident] = item.lines[id_field]
            if config is not None:
                valid[ident] = config
    return valid, list(first_line)


def _build(doc: Any, path: str, registry: Registry, problems: _Problems) -> Optional[GatewayConfig]:
    if doc is None:
        doc = _Map()
        doc.line, doc.lines, doc.duplicates = 1, {}, []
    if not isinstance(doc, _Map):
        problems.add(getattr(doc, "line", 1), "(top level)", f"must be a mapping of {', '.join(TOP_LEVEL_KEYS)}")
        return None
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problems.add(doc.lines[key], str(key), f"unknown key (expected: {', '.join(TOP_LEVEL_KEYS)})")

    settings = _GlobalFields().load({})
    if doc.get("global") is not None:
        if not isinstance(doc["global"], _Map):
            problems.add(doc.lines["global"], "global", "must be a mapping")
        else:
            try:
                settings = _GlobalFields().load(doc["global"])
            except ValidationError as exc:
                _report(problems, exc.messages, doc["global"], "global", doc.lines["global"])

    sources, _ = _entries(doc, "sources", "key", lambda item, line: _source(registry, item, "file", line), problems)
    sinks, sink_names = _entries(doc, "sinks", "name", lambda item, line: _sink(registry, item, line), problems)

    if "route" not in doc:
        problems.add(None, "route", "required: the root route names the default sinks")
        return None
    checker = _RouteChecker(problems, sink_names, sorted(registry.source_types))
    route = checker.route(doc["route"], "route", doc.lines["route"], None)
    if route is None:
        return None
    return GatewayConfig(
        path=path, sources=sources, sinks=sinks, route=route,
        retention=settings["retention"], max_body_size=settings["max_body_size"],
    )


def parse_config_text(
    text: str, path: str, registry: Registry, env: Mapping[str, str] = os.environ
) -> GatewayConfig:
    """Check a config given as text (``path`` only names it in messages); raises ``ConfigError``."""
    path = str(path)
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or str(exc)
        if exc.context and exc.problem:
            message = f"{exc.problem} ({exc.context})"
        raise ConfigError([ConfigProblem(path, mark.line + 1 if mark else None, "yaml", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(path, None, "yaml", str(exc))]) from None
    problems = _Problems(path)
    _interpolate_tree(doc, "", env, problems)
    config = _build(doc, path, registry, problems)
    if problems.items or config is None:
        raise ConfigError(problems.in_file_order())
    return config


def read_config_text(path: str | os.PathLike) -> str:
    """The file's text; an unreadable file is a ``ConfigError`` like any other problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(path), None, "(file)", f"cannot read: {exc}")]) from None


def load_config(path: str | os.PathLike, registry: Registry, env: Mapping[str, str] = os.environ) -> GatewayConfig:
    """Read and check ``gateway.yaml``; raises ``ConfigError`` listing every problem found."""
    return parse_config_text(read_config_text(path), str(path), registry, env)
