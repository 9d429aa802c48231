"""Sources and sinks: their own fields, then everything else by their type's options schema.

Sources created at runtime through the API pass through the same check (``validate_source``),
so file and API sources obey identical rules.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from gateway.config.model import NAME_PATTERN, RateLimit, SinkConfig, SourceConfig
from gateway.config.redaction import Options, secret_fields
from gateway.fields import Rate
from gateway.plugins import Registry

_NAME = validate.Regexp(NAME_PATTERN, error="must be 1-64 characters of A-Z a-z 0-9 . _ -")
_NOT_A_PATH_SEGMENT = validate.NoneOf((".", ".."), error="must not be . or .. (a URL cannot carry it)")


class SourceFields(Schema):
    """The keys of a source that are not its type's options."""

    key = fields.String(required=True, validate=[_NAME, _NOT_A_PATH_SEGMENT])
    type = fields.String(required=True)
    name = fields.String(load_default=None, allow_none=True)
    enabled = fields.Boolean(load_default=True)
    rate_limit = Rate(load_default=None)
    """Requests per second the source may send, held across every worker and process (429 past it)."""
    burst = fields.Integer(load_default=None, validate=validate.Range(min=1, max=1_000_000))
    """Requests it may send at once after a quiet while; one second's worth (at least 1) by default."""

    @validates_schema
    def _burst_needs_a_rate(self, data, **kwargs):
        if data.get("burst") is not None and data.get("rate_limit") is None:
            raise ValidationError("burst needs a rate_limit", "burst")


class SinkFields(Schema):
    """The keys of a sink that are not its type's options."""

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


def check_source(registry: Registry, data: Any, origin: str, line: Optional[int]):
    """``(SourceConfig, {})``, or ``(None, marshmallow-style errors)``."""
    own, options, errors = _check_entry("source", SourceFields, registry.source_types, data)
    if errors:
        return None, errors
    rate, burst = own.get("rate_limit"), own.get("burst")
    source = SourceConfig(
        key=own["key"], type=own["type"], name=own["name"] or own["key"], enabled=own["enabled"],
        options=options, line=line, origin=origin,
        rate_limit=RateLimit(rate, burst or max(1, math.ceil(rate))) if rate is not None else None,
    )
    return source, {}


def check_sink(registry: Registry, data: Any, line: Optional[int]):
    """``(SinkConfig, {})``, or ``(None, marshmallow-style errors)``."""
    own, options, errors = _check_entry("sink", SinkFields, registry.sink_types, data)
    if errors:
        return None, errors
    return SinkConfig(name=own["name"], type=own["type"], options=options, line=line), {}


def validate_source(registry: Registry, data: Mapping[str, Any], origin: str = "api") -> SourceConfig:
    """Check one source created at runtime exactly as a source in the file is checked.

    Raises ``marshmallow.ValidationError`` whose messages map each bad field to its problems.
    """
    source, errors = check_source(registry, data, origin, None)
    if errors:
        raise ValidationError(errors)
    return source
