"""The live state the request path reads: config, plugin instances and the router.

It is built once from gateway.yaml and swapped whole on reload, so a request sees
either the old or the new config, never half of each, and no request parses YAML or
discovers plugins.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from sqlalchemy import Engine, select

from gateway import metrics
from gateway.config import (
    NAME_PATTERN, ConfigError, GatewayConfig, SourceConfig, parse_config_text, read_config_text, validate_source,
)
from gateway.contracts import SinkType, SourceType
from gateway.pipeline.router import Router
from gateway.plugins import Registry
from gateway.store.models import RuntimeSource

if TYPE_CHECKING:
    from gateway.pipeline.wakeups import Announcer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveSource:
    """A source ready to take requests: its settings and its plugin instance."""

    key: str
    type: str
    name: str
    enabled: bool
    origin: str
    plugin: SourceType
    reopen_window: Optional[float]


@dataclass(frozen=True)
class Snapshot:
    config: GatewayConfig
    sources: Mapping[str, ActiveSource]
    sinks: Mapping[str, SinkType]
    router: Router


def activate(registry: Registry, source: SourceConfig) -> ActiveSource:
    plugin = registry.source_types[source.type](source.key, source.options)
    return ActiveSource(source.key, source.type, source.name, source.enabled, source.origin, plugin,
                        source.options.get("reopen_window"))


def build_snapshot(config: GatewayConfig, registry: Registry) -> Snapshot:
    sources = {key: activate(registry, src) for key, src in config.sources.items()}
    sinks = {name: registry.sink_types[sink.type](name, sink.options) for name, sink in config.sinks.items()}
    return Snapshot(config, sources, sinks, Router(config.route))


class Runtime:
    """Owns the current snapshot, reloads it, and finds sources (file or database)."""

    def __init__(self, registry: Registry, engine: Engine, config_path: str, env: Mapping[str, str],
                 last_good: Optional[str] = None):
        """``last_good``: where the server keeps the last valid text (``gateway serve`` sets it)."""
        self.registry = registry
        self.engine = engine
        self.config_path = config_path
        self.env = env
        self.last_good = last_good
        self.reload_ok = True
        self.reload_error: Optional[str] = None
        try:
            config = self._load()
        except ConfigError as exc:
            if not (last_good and os.path.exists(last_good)):
                raise
            # A worker (re)started after the file was broken serves what its siblings serve,
            # instead of failing to boot, which would stop the whole server.
            log.error("%s is invalid; serving the last valid config:\n%s", config_path, exc)
            text = read_config_text(last_good)
            config = parse_config_text(text, config_path, registry, env)
            self.reload_ok, self.reload_error = False, str(exc)
        self.snapshot = build_snapshot(config, registry)
        self._outbox_changed = threading.Condition()
        self.outbox_generation = 0
        """Counts wake-ups, so a dispatcher can tell it missed one (see ``wait_for_deliveries``)."""
        self.announcer: Optional[Announcer] = None
        """Set by ``pipeline.wakeups.start``: tells other processes of queued rows."""
        self._runtime_sources: dict[str, tuple[datetime, ActiveSource]] = {}
        self._lock = threading.Lock()
        metrics.CONFIG_RELOAD_OK.set(1 if self.reload_ok else 0)
        metrics.CONFIG_RELOAD_TIME.set_to_current_time()

    def _load(self) -> GatewayConfig:
        """Read and check gateway.yaml, keeping a valid text as the last good one."""
        text = read_config_text(self.config_path)
        config = parse_config_text(text, self.config_path, self.registry, self.env)
        if self.last_good:
            partial = f"{self.last_good}.{os.getpid()}"
            Path(partial).write_text(text, encoding="utf-8")
            os.replace(partial, self.last_good)
        return config

    def reload(self) -> bool:
        """Re-read gateway.yaml; an invalid file is logged and not applied."""
        try:
            snapshot = build_snapshot(self._load(), self.registry)
        except Exception as exc:  # the old config stays in force, whatever went wrong
            self.reload_ok, self.reload_error = False, str(exc)
            metrics.CONFIG_RELOAD_OK.set(0)
            log.error("config reload failed; keeping the previous config:\n%s", exc)
            return False
        old, self.snapshot = self.snapshot, snapshot
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
        """After a commit that queued outbox rows: wake this process's dispatchers, and
        through the announcer (``pipeline.wakeups``, PostgreSQL) those of other processes."""
        self.wake_dispatchers()
        if self.announcer is not None:
            self.announcer.announce()

    def wake_dispatchers(self) -> None:
        with self._outbox_changed:
            self.outbox_generation += 1
            self._outbox_changed.notify_all()

    def wait_for_deliveries(self, timeout: float, seen: int) -> None:
        """Wait up to ``timeout`` for a wake-up after ``seen``, the ``outbox_generation`` read
        before the dispatcher last looked: one that came while it looked is not lost."""
        with self._outbox_changed:
            self._outbox_changed.wait_for(lambda: self.outbox_generation != seen, timeout)

    def find_source(self, key: str) -> Optional[ActiveSource]:
        """A source from gateway.yaml, else one created through the API (one indexed lookup).

        A key no source can have is not looked up: PostgreSQL would refuse one holding a NUL.
        """
        found = self.snapshot.sources.get(key)
        if found is not None:
            return found
        if not NAME_PATTERN.match(key):
            return None
        row = self.source_row(key)
        if row is None or row.type not in self.registry.source_types:
            return None
        return self._runtime_source(row)

    def source_row(self, key: str) -> Any:
        """The ``sources`` row of a source created through the API, or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(RuntimeSource.__table__).where(RuntimeSource.key == key)).first()

    def _runtime_source(self, row: Any) -> ActiveSource:
        """Activated once per version of the row (its ``updated_at``)."""
        with self._lock:
            cached = self._runtime_sources.get(row.key)
            if cached is None or cached[0] != row.updated_at:
                config = validate_source(
                    self.registry,
                    {"key": row.key, "type": row.type, "name": row.name, "enabled": row.enabled, **row.options},
                    origin="api",
                )
                cached = self._runtime_sources[row.key] = (row.updated_at, activate(self.registry, config))
            return cached[1]
