"""Reads the whole file: top level, ``global``, ``sources``, ``sinks`` and ``route``, every problem at once."""
from __future__ import annotations

import os
import zoneinfo
from typing import Any, Mapping, Optional

from marshmallow import Schema, ValidationError, fields, validate

from gateway.config.entries import check_sink, check_source
from gateway.config.interpolation import interpolate_tree
from gateway.config.located import LineMap, Problems, as_list, load_yaml
from gateway.config.model import (
    DEFAULT_MAX_BODY_SIZE, DEFAULT_RETENTION, TOP_LEVEL_KEYS, ConfigError, ConfigProblem, GatewayConfig,
)
from gateway.config.routes import check_route
from gateway.fields import Duration, Size
from gateway.plugins import Registry


def _known_zone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {name!r} (an IANA name such as Asia/Seoul)") from None


class GlobalFields(Schema):
    """The keys of ``global``."""

    retention = Duration(load_default=DEFAULT_RETENTION)
    max_body_size = Size(load_default=DEFAULT_MAX_BODY_SIZE)
    # The console: absolute links (Webhook URL) and a Secure cookie when https; its defaults.
    external_url = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"}, require_tld=False)
    default_language = fields.String(load_default="ko", validate=validate.OneOf(["ko", "en"]))
    timezone = fields.String(load_default="Asia/Seoul", validate=_known_zone)


def _entries(doc: LineMap, section: str, id_field: str, build, problems: Problems):
    """Check each item of ``sources``/``sinks``; returns the valid ones and every declared id."""
    items = as_list(doc.get(section))
    if items is None:
        problems.add(doc.lines[section], section, "must be a list")
        return {}, []
    valid, first_line = {}, {}
    for i, item in enumerate(items):
        path, line = f"{section}[{i}]", items.lines[i]
        config, errors = build(item, line)
        problems.report(errors, item, path, line)
        ident = item.get(id_field) if isinstance(item, LineMap) else None
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


def _global(doc: LineMap, problems: Problems) -> dict:
    if doc.get("global") is None:
        return GlobalFields().load({})
    if not isinstance(doc["global"], LineMap):
        problems.add(doc.lines["global"], "global", "must be a mapping")
        return GlobalFields().load({})
    try:
        return GlobalFields().load(doc["global"])
    except ValidationError as exc:
        problems.report(exc.messages, doc["global"], "global", doc.lines["global"])
        return GlobalFields().load({})


def _build(doc: Any, path: str, registry: Registry, problems: Problems) -> Optional[GatewayConfig]:
    if doc is None:
        doc = LineMap.empty(1)
    if not isinstance(doc, LineMap):
        problems.add(getattr(doc, "line", 1), "(top level)", f"must be a mapping of {', '.join(TOP_LEVEL_KEYS)}")
        return None
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problems.add(doc.lines[key], str(key), f"unknown key (expected: {', '.join(TOP_LEVEL_KEYS)})")

    settings = _global(doc, problems)
    sources, _ = _entries(doc, "sources", "key", lambda item, line: check_source(registry, item, "file", line),
                          problems)
    sinks, sink_names = _entries(doc, "sinks", "name", lambda item, line: check_sink(registry, item, line), problems)

    if "route" not in doc:
        problems.add(None, "route", "required: the root route names the default sinks")
        return None
    route = check_route(doc["route"], doc.lines["route"], sink_names, sorted(registry.source_types), problems)
    if route is None:
        return None
    return GatewayConfig(
        path=path, sources=sources, sinks=sinks, route=route,
        retention=settings["retention"], max_body_size=settings["max_body_size"],
        external_url=settings["external_url"], default_language=settings["default_language"],
        timezone=settings["timezone"],
    )


def parse_config_text(text: str, path: str, registry: Registry, env: Mapping[str, str]) -> GatewayConfig:
    """Check a config given as text (``path`` only names it in messages), ``${VAR}`` read from ``env``;
    raises ``ConfigError``."""
    path = str(path)
    doc = load_yaml(text, path)
    problems = Problems(path)
    interpolate_tree(doc, "", env, problems)
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


def load_config(path: str | os.PathLike, registry: Registry, env: Mapping[str, str]) -> GatewayConfig:
    """Read and check ``gateway.yaml``; raises ``ConfigError`` listing every problem found."""
    return parse_config_text(read_config_text(path), str(path), registry, env)
