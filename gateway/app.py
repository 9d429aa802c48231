"""The Flask application factory."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from flask import Flask
from sqlalchemy import Engine

from gateway.config import DEFAULT_PATH
from gateway.pipeline.runtime import Runtime
from gateway.plugins import Registry, build_registry
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
    ``GATEWAY_DATABASE_URL``, ``GATEWAY_ADMIN_TOKEN``), then ``test_config``.
    """
    app = Flask(__name__, static_folder=None)  # the console serves its own assets
    app.json.ensure_ascii = False  # Korean titles stay readable
    app.url_map.converters.update(id=RowIdConverter, source_key=SourceKeyConverter)
    app.url_map.merge_slashes = False  # "//" is a 404 in JSON, not werkzeug's HTML redirect
    app.config.from_mapping(
        CONFIG=DEFAULT_PATH,
        DATABASE_URL=default_database_url(),
        ADMIN_TOKEN=None,
        SERVED_BY_GUNICORN=False,
    )
    app.config.from_prefixed_env("GATEWAY", loads=str)
    if test_config:
        app.config.update(test_config)

    registry = build_registry(extra_plugins)
    engine = make_engine(app.config["DATABASE_URL"])
    runtime = Runtime(registry, engine, app.config["CONFIG"], os.environ, app.config.get("LAST_GOOD_CONFIG"))
    app.extensions["gateway"] = Gateway(runtime)

    from gateway.incidents import console as incidents_console
    from gateway.incidents.api import bp as incidents_bp
    from gateway.web import api, console, hooks, ops
    from gateway.web.errors import register_error_handlers

    for blueprint in (hooks.bp, api.bp, incidents_bp, ops.bp, console.bp, incidents_console.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    console.init_app(app)
    return app
