"""The Flask application factory."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from flask import Flask
from sqlalchemy import Engine

from gateway.config import DEFAULT_PATH
from gateway.pipeline.runtime import Runtime
from gateway.plugins import PluginError, Registry, build_registry
from gateway.store.db import default_database_url, make_engine
from gateway.web.common import RowIdConverter, SourceKeyConverter


@dataclass
class Gateway:
    """What the blueprints share, kept on ``app.extensions["gateway"]``."""

    runtime: Runtime

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def engine(self) -> Engine:
        return self.runtime.engine


def create_app(test_config: Optional[Mapping[str, Any]] = None, *, extra_plugins: Iterable[object] = ()) -> Flask:
    """Build the app; an invalid gateway.yaml or plugin stops it here with the exact messages.

    Settings come from ``GATEWAY_*`` environment variables (``GATEWAY_CONFIG``,
    ``GATEWAY_DATABASE_URL``, ``GATEWAY_ADMIN_TOKEN``, ``GATEWAY_SQLITE_SYNCHRONOUS``), then ``test_config``.
    """
    app = Flask(__name__)
    app.json.ensure_ascii = False  # Korean titles stay readable
    app.url_map.converters.update(id=RowIdConverter, source_key=SourceKeyConverter)
    app.url_map.merge_slashes = False  # "//" is a 404 in JSON, not werkzeug's HTML redirect
    app.config.from_mapping(
        CONFIG=DEFAULT_PATH,
        DATABASE_URL=default_database_url(),
        ADMIN_TOKEN=None,
        SERVED_BY_GUNICORN=False,
        SQLITE_SYNCHRONOUS="FULL",
    )
    app.config.from_prefixed_env("GATEWAY", loads=str)
    if test_config:
        app.config.update(test_config)

    registry = build_registry(extra_plugins)
    engine = make_engine(app.config["DATABASE_URL"], sqlite_synchronous=app.config["SQLITE_SYNCHRONOUS"])
    runtime = Runtime(registry, engine, app.config["CONFIG"], os.environ, app.config.get("LAST_GOOD_CONFIG"))
    app.extensions["gateway"] = Gateway(runtime)

    from gateway.web import api, hooks, ops
    from gateway.web.errors import register_error_handlers

    for blueprint in (hooks.bp, api.bp, ops.bp):
        app.register_blueprint(blueprint)
    _register_plugin_blueprints(app, registry)
    register_error_handlers(app)
    return app


def _register_plugin_blueprints(app: Flask, registry: Registry) -> None:
    """After the core's: a plugin may add routes, never take over one that is served already."""
    for name, blueprint in registry.blueprints.items():
        plugin = registry.owner("blueprints", name)
        taken = _served(app)
        try:
            app.register_blueprint(blueprint)
        except ValueError as exc:  # the core has a blueprint of that name
            raise PluginError(f"plugin {plugin.name!r} ({plugin.distribution}): {exc}") from exc
        clashes = _served(app, name) & taken
        if clashes:
            raise PluginError(f"plugin {plugin.name!r} ({plugin.distribution}): blueprint {name!r} routes "
                              f"what is served already: {', '.join(sorted(clashes))}")


def _served(app: Flask, blueprint: Optional[str] = None) -> set[str]:
    """``"GET /path"`` for each route of the app (or of one blueprint), without the HEAD and
    OPTIONS that Flask adds to every route."""
    return {f"{method} {rule.rule}" for rule in app.url_map.iter_rules()
            if blueprint is None or rule.endpoint.startswith(f"{blueprint}.")
            for method in rule.methods - {"HEAD", "OPTIONS"}}
