"""Loads and checks the operator's ``config/gateway.yaml``.

The file reads top to bottom like Alertmanager's: ``global`` → ``sources`` (webhook
URLs) → ``sinks`` (destinations) → ``route`` (who gets what).  Checking is strict and
reports every problem at once, each as ``FILE:LINE: path: message``: a YAML loader that
remembers the line of every key and list item (``located``) lets marshmallow's field-keyed
messages point back into the file.

- ``model``: the loaded configuration and its problems;
- ``located``: YAML with line numbers, and problems located by them;
- ``interpolation``: ``${VAR}``;
- ``entries``: sources and sinks (also those created through the API);
- ``routes``: the route tree;
- ``redaction``: the config as it may be shown, credentials hidden;
- ``loader``: the whole file.
"""
from gateway.config.entries import SinkFields, SourceFields, validate_source
from gateway.config.interpolation import interpolate
from gateway.config.loader import GlobalFields, load_config, parse_config_text, read_config_text
from gateway.config.model import (
    DEFAULT_MAX_BODY_SIZE, DEFAULT_PATH, DEFAULT_RETENTION, MATCH_KEYS, NAME, NAME_PATTERN, ROUTE_KEYS,
    TOP_LEVEL_KEYS, ConfigError, ConfigProblem, GatewayConfig, RateLimit, Route, SinkConfig, SourceConfig, count_routes,
    summary,
)
from gateway.config.redaction import (
    Options, redacted, redacted_options, redacted_source, route_dict, secret_fields,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE", "DEFAULT_PATH", "DEFAULT_RETENTION", "MATCH_KEYS", "NAME", "NAME_PATTERN",
    "ROUTE_KEYS", "TOP_LEVEL_KEYS", "ConfigError", "ConfigProblem", "GatewayConfig", "GlobalFields", "Options",
    "RateLimit", "Route", "SinkConfig", "SinkFields", "SourceConfig", "SourceFields", "count_routes", "interpolate",
    "load_config", "parse_config_text", "read_config_text", "redacted", "redacted_options", "redacted_source",
    "route_dict", "secret_fields", "summary", "validate_source",
]
