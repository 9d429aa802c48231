"""The Flask application factory."""
from __future__ import annotations

import gc
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Optional

from flask import Flask
from sqlalchemy import Engine

from gateway.logs import configure_logging
from gateway.pipeline.runtime import Runtime, open_runtime
from gateway.plugins import PluginError, Registry
from gateway.settings import Settings
from gateway.web.common import RowIdConverter, SourceKeyConverter
from gateway.web.proxies import TrustedProxies

_SETTING_OF = {"CONFIG": "config_path", "DATABASE_URL": "database_url", "ADMIN_TOKEN": "admin_token",
               "LAST_GOOD_CONFIG": "last_good_config", "SERVED_BY_GUNICORN": "served_by_gunicorn",
               "SQLITE_SYNCHRONOUS": "sqlite_synchronous",
               "FORWARDED_ALLOW_IPS": "forwarded_allow_ips"}
"""``create_app``'s ``test_config`` keys that override a setting."""


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

    @property
    def settings(self) -> Settings:
        return self.runtime.settings


def create_app(test_config: Optional[Mapping[str, Any]] = None, *, extra_plugins: Iterable[object] = (),
               settings: Optional[Settings] = None) -> Flask:
    """Build the app; an invalid gateway.yaml or plugin stops it here with the exact messages.

    ``settings`` default to ``Settings.from_environ()`` (the ``GATEWAY_*`` variables);
    ``test_config`` overrides them (``CONFIG``, ``DATABASE_URL``, ``ADMIN_TOKEN``, ...) and sets Flask's own.
    """
    test_config = dict(test_config or {})
    settings = replace(settings or Settings.from_environ(),
                       **{_SETTING_OF[k]: test_config.pop(k) for k in list(test_config) if k in _SETTING_OF})
    app = Flask(__name__, static_folder=None)  # the console serves its own assets
    app.json.ensure_ascii = False  # Korean titles stay readable
    app.url_map.converters.update(id=RowIdConverter, source_key=SourceKeyConverter)
    app.url_map.merge_slashes = False  # "//" is a 404 in JSON, not werkzeug's HTML redirect
    # Kept in Flask's config too, where blueprints (auth) and tests read them.
    app.config.update(CONFIG=settings.config_path, DATABASE_URL=settings.database_url,
                      ADMIN_TOKEN=settings.admin_token, **test_config)

    runtime = open_runtime(settings, extra_plugins)
    app.extensions["gateway"] = Gateway(runtime)

    from gateway.web import api, console, hooks, openapi, ops
    from gateway.web.errors import register_error_handlers
    from gateway.web.requestlog import register_request_log

    for blueprint in (hooks.bp, api.bp, openapi.bp, ops.bp, console.bp):
        app.register_blueprint(blueprint)
    _register_plugin_blueprints(app, runtime.registry)
    register_error_handlers(app)
    console.init_app(app)
    register_request_log(app)
    configure_logging(settings.log_format)
    if settings.forwarded_allow_ips:
        app.wsgi_app = TrustedProxies(app.wsgi_app, settings.forwarded_allow_ips)
    return app


def settle_heap() -> None:
    """Put what a serving process has loaded (modules, the app, its plugins, its templates) out of
    the garbage collector's sight: it lives as long as the process, and every full collection
    walked all of it, which a page making many objects set off now and then.  Called by a gunicorn
    worker once it is ready (and by bench/console.py's in-process measure): the 1,000-entry incident
    page at a year's scale went from p95 64-67 to 24 ms, its median unchanged."""
    gc.collect()
    gc.freeze()


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
