"""The live state the request path reads: config, plugin instances and the router.

It is built once from gateway.yaml and swapped whole on reload, so a request sees
either the old or the new config, never half of each, and no request parses YAML or
discovers plugins.  Beside it the runtime holds the two services every process needs:
``sources`` (finding and changing sources) and ``wakeups`` (waking dispatchers).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Optional

from sqlalchemy import Engine

from gateway import metrics
from gateway.config import ConfigError, GatewayConfig, parse_config_text, read_config_text
from gateway.contracts import SinkType
from gateway.pipeline.giveway import InFlight
from gateway.pipeline.router import Router
from gateway.pipeline.sources import ActiveSource, Sources, activate
from gateway.pipeline.wakeups import WakeUps
from gateway.plugins import Registry, build_registry
from gateway.settings import Settings
from gateway.store.db import make_engine

log = logging.getLogger(__name__)

__all__ = ["ActiveSource", "Runtime", "Snapshot", "build_snapshot", "open_runtime"]


@dataclass(frozen=True)
class Snapshot:
    config: GatewayConfig
    sources: Mapping[str, ActiveSource]
    sinks: Mapping[str, SinkType]
    router: Router


def build_snapshot(config: GatewayConfig, registry: Registry) -> Snapshot:
    sources = {key: activate(registry, src) for key, src in config.sources.items()}
    sinks = {name: registry.sink_types[sink.type](name, sink.options) for name, sink in config.sinks.items()}
    return Snapshot(config, sources, sinks, Router(config.route))


class Runtime:
    """Owns the current snapshot and reloads it."""

    def __init__(self, settings: Settings, registry: Registry, engine: Engine):
        """``settings.last_good_config``: where the server keeps the last valid text (``gateway serve`` sets it)."""
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.config_path = settings.config_path
        self.reload_ok = True
        self.reload_error: Optional[str] = None
        try:
            config, text = self._load()
        except ConfigError as exc:
            last_good = settings.last_good_config
            if not (last_good and os.path.exists(last_good)):
                raise
            # A worker (re)started after the file was broken serves what its siblings serve,
            # instead of failing to boot, which would stop the whole server.
            log.error("%s is invalid; serving the last valid config:\n%s", self.config_path, exc)
            text = read_config_text(last_good)
            config = self._modified_at(parse_config_text(text, self.config_path, registry, settings.env), last_good)
            self.reload_ok, self.reload_error = False, str(exc)
        self.snapshot = build_snapshot(config, registry)
        self.sha256 = _digest(text)
        self.wakeups = WakeUps(engine)
        self.requests = InFlight()
        """Requests this process is serving, counted where a dispatcher gives way to them (a serve worker's)."""
        self.sources = Sources(engine, registry, lambda: self.snapshot.sources)
        metrics.CONFIG_RELOAD_OK.set(1 if self.reload_ok else 0)
        metrics.CONFIG_RELOAD_TIME.set_to_current_time()

    def _load(self) -> tuple[GatewayConfig, str]:
        """Read and check gateway.yaml, keeping a valid text as the last good one; the config and its text.

        ``loaded_at`` is the file's modification time, which the last good copy keeps too: every
        worker that reads the same file, or is started on its copy, reports the same time."""
        text = read_config_text(self.config_path)
        config = parse_config_text(text, self.config_path, self.registry, self.settings.env)
        modified = os.stat(self.config_path).st_mtime
        last_good = self.settings.last_good_config
        if last_good:
            partial = f"{last_good}.{os.getpid()}"
            Path(partial).write_text(text, encoding="utf-8")
            os.utime(partial, (modified, modified))
            os.replace(partial, last_good)
        return self._modified_at(config, last_good or self.config_path), text

    @staticmethod
    def _modified_at(config: GatewayConfig, path: str) -> GatewayConfig:
        return replace(config, loaded_at=datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc))

    def config_report(self) -> dict:
        """What /health says of the config: the same in every worker that read the same file."""
        return {"path": self.config_path, "loaded_at": self.snapshot.config.loaded_at.isoformat(),
                "sha256": self.sha256,
                "last_reload_ok": self.reload_ok, "last_reload_error": self.reload_error}

    def reload(self) -> bool:
        """Re-read gateway.yaml; an invalid file is logged and not applied."""
        try:
            config, text = self._load()
            snapshot = build_snapshot(config, self.registry)
        except Exception as exc:  # the old config stays in force, whatever went wrong
            self.reload_ok, self.reload_error = False, str(exc)
            metrics.CONFIG_RELOAD_OK.set(0)
            log.error("config reload failed; keeping the previous config:\n%s", exc)
            return False
        old, self.snapshot, self.sha256 = self.snapshot, snapshot, _digest(text)
        self.reload_ok, self.reload_error = True, None
        metrics.CONFIG_RELOAD_OK.set(1)
        metrics.CONFIG_RELOAD_TIME.set_to_current_time()
        log.info("config reloaded from %s", self.config_path)
        # In-flight deliveries may still hold the old sinks; let them finish first.
        # A daemon timer: it must not keep a stopping process (tests, workers after SIGTERM) alive 60 s.
        closer = threading.Timer(60, lambda: [sink.close() for sink in old.sinks.values()])
        closer.daemon = True
        closer.start()
        return True

    def notify_deliveries(self) -> None:
        """After a commit that queued outbox rows: wake the dispatchers (see ``WakeUps``)."""
        self.wakeups.notify_deliveries()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def open_runtime(settings: Settings, extra_plugins: Iterable[object] = ()) -> Runtime:
    """Plugins, database and config, as every command that delivers or serves needs them (no Flask)."""
    registry = build_registry(extra_plugins, disabled=settings.disabled_plugins)
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous,
                         group_commit=settings.group_commit)
    return Runtime(settings, registry, engine)
