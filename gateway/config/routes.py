"""The ``route`` tree, checked by marshmallow schemas like the rest of the file.

The checks that depend on the rest of the file (the sinks it defines, the registered source
types) read them from ``_KNOWN``, set for the duration of one ``check_route``.
"""
from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, missing, post_load

from gateway.config.located import Problems, position
from gateway.config.model import MATCH_KEYS, ROUTE_KEYS, Route
from gateway.contracts import SEVERITIES, ALERT_STATUSES
from gateway.fields import Duration, parse_duration


@dataclass(frozen=True)
class _Known:
    sinks: tuple[str, ...]
    source_types: tuple[str, ...]


_KNOWN: ContextVar[_Known] = ContextVar("known")


def _not_a_duration(value: Any) -> str:
    try:
        parse_duration(value)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{value!r} is a duration")


class _SinkNames(fields.Field):
    """A list of names of sinks the file defines; an undefined one is reported at its item."""

    default_error_messages = {"invalid": "must be a list of sink names", "null": "must be a list of sink names",
                              "empty": "the root route needs at least one sink"}

    def __init__(self, *, of_root: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.of_root = of_root

    def _deserialize(self, value, attr, data, **kwargs) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
            raise self.make_error("invalid")
        defined = _KNOWN.get().sinks
        errors: dict[Any, list[str]] = {}
        if self.of_root and not value:
            errors["_schema"] = [self.error_messages["empty"]]
        for i, name in enumerate(value):
            if name not in defined:
                errors[i] = [f"undefined sink '{name}' (defined: {', '.join(defined) or 'none'})"]
        if errors:
            raise ValidationError(errors)
        return tuple(dict.fromkeys(value))


class _Labels(fields.Field):
    """A match value: one string or a non-empty list of strings, each one of ``allowed`` when given."""

    default_error_messages = {"invalid": "must be a string or a non-empty list of strings",
                              "null": "must be a string or a non-empty list of strings"}

    def __init__(self, noun: str, allowed=None, **kwargs):
        super().__init__(**kwargs)
        self.noun, self.allowed = noun, allowed

    def _deserialize(self, value, attr, data, **kwargs) -> tuple[str, ...]:
        if isinstance(value, str):
            items = [value]
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            items = list(value)
        else:
            raise self.make_error("invalid")
        allowed = self.allowed() if callable(self.allowed) else self.allowed
        if allowed is not None:
            errors = {i: [f"'{item}' is not a {self.noun} (one of: {', '.join(allowed)})"]
                      for i, item in enumerate(items) if item not in allowed}
            if errors:
                raise ValidationError(errors[0] if isinstance(value, str) else errors)
        return tuple(items)


class _Match(Schema):
    class Meta:
        unknown = RAISE

    error_messages = {"unknown": f"unknown match key (expected: {', '.join(MATCH_KEYS)})",
                      "type": f"must be a mapping of {', '.join(MATCH_KEYS)}"}

    source = _Labels("source")
    source_type = _Labels("source type", allowed=lambda: _KNOWN.get().source_types)
    severity = _Labels("severity", allowed=SEVERITIES)
    status = _Labels("status", allowed=ALERT_STATUSES)


_MUST_BE_BOOLEAN = {"invalid": "must be true or false", "null": "must be true or false"}


class _Refused(fields.Field):
    """A key the root route must not have: it receives every alert.  Its value is still checked
    (``also``), as on any other route."""

    def __init__(self, also: Optional[fields.Field] = None, **kwargs):
        super().__init__(**kwargs)
        self.also = also

    def deserialize(self, value, attr=None, data=None, **kwargs):
        """Whatever the value, even none (``match:`` left empty)."""
        if value is missing:
            return value
        messages = [f"the root route must not have {self.data_key or attr}: it receives every alert"]
        if self.also is not None:
            try:
                self.also.deserialize(value)
            except ValidationError as exc:
                messages += exc.messages
        raise ValidationError(messages)


class _RouteFields(Schema):
    """What every route has; the subclasses differ in ``match``, ``continue`` and ``sinks``."""

    class Meta:
        unknown = RAISE

    error_messages = {"unknown": f"unknown key (expected: {', '.join(ROUTE_KEYS)})",
                      "type": "a route must be a mapping"}

    reopen_window = Duration(error_messages={"null": _not_a_duration(None)})
    routes = fields.List(fields.Nested(lambda: _ChildRoute(), error_messages={"null": "a route must be a mapping"}),
                         allow_none=True,
                         error_messages={"invalid": "must be a list of routes"})

    @post_load(pass_original=True)
    def _keep_line(self, data: dict, original: Any, **kwargs) -> dict:
        return {**data, "line": original.line}


class _ChildRoute(_RouteFields):
    match = fields.Nested(_Match, error_messages={"null": _Match.error_messages["type"]})
    # like `enabled`, also yes/no/on/off (strings since YAML 1.2 booleans, see located._Loader)
    continue_ = fields.Boolean(data_key="continue", load_default=False, error_messages=_MUST_BE_BOOLEAN)
    sinks = _SinkNames()


class _RootRoute(_RouteFields):
    match = _Refused()
    continue_ = _Refused(fields.Boolean(error_messages=_MUST_BE_BOOLEAN), data_key="continue")
    sinks = _SinkNames(of_root=True, required=True, error_messages={
        "required": "required: the root route's sinks get every alert no child route takes"})


def _tree(loaded: dict, parent: Optional[Route]) -> Route:
    """The checked route with what it inherits: sinks and reopen_window."""
    this = Route(
        match=loaded.get("match", {}),
        sinks=loaded["sinks"] if "sinks" in loaded else parent.sinks,
        continue_=loaded.get("continue_", False),
        reopen_window=loaded["reopen_window"] if "reopen_window" in loaded else parent.reopen_window if parent else None,
        routes=(),
        line=loaded["line"],
    )
    children = tuple(_tree(child, this) for child in loaded.get("routes") or ())
    return Route(this.match, this.sinks, this.continue_, this.reopen_window, children, this.line)


_ROUTE_PATH = re.compile(r"route(?:\.routes\[\d+\])*\Z")


def _in_check_order(path: str, node: Any, key: Any) -> tuple:
    """A route's problems that share a line: unknown keys, the root's refused keys, then each key
    in ROUTE_KEYS order; any other node's in its key order."""
    if not _ROUTE_PATH.match(path) or key not in ROUTE_KEYS:
        return 0, position(node, key)
    if path == "route" and key in ("match", "continue"):
        return 1, key != "match"
    return 2, ROUTE_KEYS.index(key)


def check_route(node: Any, line: Optional[int], sinks: list[str], source_types: list[str],
                problems: Problems) -> Optional[Route]:
    """The root route at ``node`` (``route:`` on ``line``), or None with its problems added."""
    token = _KNOWN.set(_Known(tuple(sinks), tuple(source_types)))
    try:
        loaded = _RootRoute().load(node)
    except ValidationError as exc:
        problems.report(exc.messages, node, "route", line, _in_check_order)
        return None
    finally:
        _KNOWN.reset(token)
    return _tree(loaded, None)
