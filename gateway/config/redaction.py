"""The config as it may be shown (``/api/config``, ``/api/sources``, logs): credentials hidden.

One rule for every option of every plugin, so a new plugin is covered without code here:

- an option whose schema field is marked ``metadata={"secret": True}`` is ``"***"`` (``None`` when unset);
- a header map (an option named ``headers`` or ``*_headers``) keeps its header names, every value ``"***"``:
  headers are how credentials travel (``Authorization``, API keys);
- the password of a URL's userinfo (``https://user:pass@host``), anywhere in any string, is ``***``,
  and so is a userinfo without a password (``https://TOKEN@host``), which is then the credential itself.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Mapping, Optional

from marshmallow import Schema

from gateway.config.model import GatewayConfig, Route, SourceConfig

MASK = "***"
_HEADER_MAP = re.compile(r"(?:^|_)headers\Z")
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]+)@")


class Options(dict):
    """A source's or sink's validated options; knows which are secrets and hides them in repr.

    ``repr`` of a config ends up in logs and tracebacks, so secrets never show there.
    """

    def __init__(self, values: Mapping[str, Any] = (), secret_keys: frozenset[str] = frozenset()):
        super().__init__(values)
        self.secret_keys = frozenset(secret_keys)

    def redacted(self) -> dict:
        return {k: _mask(v) if k in self.secret_keys else _without_credentials(k, v) for k, v in self.items()}

    def __repr__(self) -> str:
        return f"Options({self.redacted()!r})"


def secret_fields(schema_cls: type[Schema]) -> set[str]:
    """Names (as loaded) of the schema's fields marked ``metadata={"secret": True}``."""
    return {name for name, f in schema_cls().fields.items() if f.metadata.get("secret")}


def _mask(value: Any) -> Optional[str]:
    return None if value is None else MASK


def _hide_userinfo(match: re.Match) -> str:
    user, has_password, _ = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if has_password else f"{match['scheme']}{MASK}@"


def _without_credentials(name: str, value: Any) -> Any:
    """``value`` with header values and URL passwords hidden (see the module's rule)."""
    if isinstance(value, Mapping) and _HEADER_MAP.search(name):
        return {header: _mask(v) for header, v in value.items()}
    if isinstance(value, str):
        return _USERINFO.sub(_hide_userinfo, value)
    if isinstance(value, Mapping):
        return {k: _without_credentials(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_credentials(name, v) for v in value]
    return value


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
    """Options as JSON with credentials hidden; plain dicts (as stored for API sources) by ``schema_cls``."""
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
    """The whole config as JSON for the API and CLI, every credential hidden."""
    return {
        "path": config.path,
        "loaded_at": config.loaded_at.isoformat(),
        "global": {"retention": config.retention, "max_body_size": config.max_body_size,
                   "external_url": config.external_url, "default_language": config.default_language,
                   "timezone": config.timezone},
        "sources": [redacted_source(s) for s in config.sources.values()],
        "sinks": [
            {"name": s.name, "type": s.type, "line": s.line, "options": redacted_options(s.options)}
            for s in config.sinks.values()
        ],
        "route": route_dict(config.route),
    }
