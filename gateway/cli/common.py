"""What the ``gateway`` commands share: the plugin registry, the config, the database and the runtime,
each opened the one way, with every problem printed and exit status 1."""
from __future__ import annotations

import sys

import click

from gateway.config import ConfigError, load_config
from gateway.settings import Settings


def plugin_registry(settings: Settings):
    from gateway.plugins import PluginError, build_registry

    try:
        return build_registry(disabled=settings.disabled_plugins)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None


def load_or_exit(settings: Settings, path: str | None = None, *, sinks: bool = True):
    """The validated config (``path``, else ``GATEWAY_CONFIG``), or every problem in it and exit status 1.

    ``sinks=False`` for a command that delivers nothing: a sink's secret need not be set for it."""
    path = path or settings.config_path
    try:
        return load_config(path, plugin_registry(settings), settings.env, sinks=sinks)
    except ConfigError as exc:
        click.echo(f"{path}: FAILED", err=True)
        click.echo(str(exc), err=True)
        sys.exit(1)


def open_engine(settings: Settings):
    from gateway.store.db import make_engine

    return make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)


def open_runtime_or_exit(settings: Settings):
    """Plugins, database and config for a command that runs the pipeline; every problem, and exit 1."""
    from gateway.pipeline.runtime import open_runtime
    from gateway.plugins import PluginError

    try:
        return open_runtime(settings)
    except (ConfigError, PluginError) as exc:
        raise click.ClickException(f"refusing to start: {settings.config_path}:\n{exc}") from None
