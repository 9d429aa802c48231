"""Sources: those of gateway.yaml and those created through the API, found, created and changed here.

The API and ingest call this service; neither writes SQL for sources of its own.  A source
created through the API obeys the rules of a source in the file (``validate_source``), and
its key may be its only secret (a source without a token), so its default name, which
``/metrics`` shows, is its type, never its key.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Optional

from sqlalchemy import Engine, Select, insert, select, update

from gateway.config import NAME_PATTERN, RateLimit, SourceConfig, validate_source
from gateway.contracts import ApiError, SourceType
from gateway.plugins import Registry
from gateway.store.db import reading, run_in_transaction
from gateway.store.models import Handshake, SourceRow, utcnow
from gateway.store.partitions import kept_raw_request_id

sources_table = SourceRow.__table__
COLUMN_FIELDS = frozenset({"key", "type", "name", "enabled"})
"""The own fields of an API source with a column of their own; the rest (``rate_limit``, ``burst``,
the type's options) are kept in ``options`` and checked again, by SourceFields, when it is activated."""


@dataclass(frozen=True)
class ActiveSource:
    """A source ready to take requests: its settings and its plugin instance."""

    key: str
    type: str
    name: str
    """Shown in the API and as the ``source`` label in ``/metrics``, where the key must never be."""
    enabled: bool
    origin: str
    plugin: SourceType
    reopen_window: Optional[float]
    rate_limit: Optional[RateLimit] = None


def activate(registry: Registry, source: SourceConfig) -> ActiveSource:
    plugin = registry.source_types[source.type](source.key, source.options)
    return ActiveSource(source.key, source.type, source.name, source.enabled, source.origin, plugin,
                        source.options.get("reopen_window"), source.rate_limit)


class Sources:
    """Finds a source by key (gateway.yaml first, then the database), creates and changes API sources."""

    def __init__(self, engine: Engine, registry: Registry, declared: Callable[[], Mapping[str, ActiveSource]]):
        """``declared``: the sources of gateway.yaml in force (they change on reload)."""
        self.engine = engine
        self.registry = registry
        self._declared = declared
        self._activated: dict[str, tuple[datetime, ActiveSource]] = {}
        self._lock = threading.Lock()

    def find(self, key: str) -> Optional[ActiveSource]:
        """A source from gateway.yaml, else one created through the API (one indexed lookup).

        A key no source can have is not looked up: PostgreSQL would refuse one holding a NUL.
        """
        found = self._declared().get(key)
        if found is not None:
            return found
        if not NAME_PATTERN.match(key):
            return None
        row = self.stored(key)
        if row is None or row.type not in self.registry.source_types:
            return None
        return self._activated_row(row)

    def stored(self, key: str) -> Any:
        """The ``sources`` row of a source created through the API, or None."""
        with reading(self.engine) as conn:
            return conn.execute(select(sources_table).where(SourceRow.key == key)).first()

    def all_stored(self) -> list:
        """Every source created through the API, by key."""
        with reading(self.engine) as conn:
            return conn.execute(select(sources_table).order_by(SourceRow.key)).all()

    @staticmethod
    def handshakes(key: str) -> Select:
        """The protocol exchanges a source answered itself, newest first (a query, for the caller to page)."""
        handshakes = Handshake.__table__
        return (select(*(c for c in handshakes.c if c.name != "raw_request_id"), kept_raw_request_id(handshakes))
                .where(handshakes.c.source_key == key).order_by(handshakes.c.id.desc()))

    def create(self, data: Mapping[str, Any]) -> tuple[Any, Optional[str]]:
        """Store a new source from API input; returns its row and its token (shown once, to the creator).

        Without an explicit key the key is unguessable: with no token set, the key is the secret.
        """
        data = {"key": secrets.token_urlsafe(18), **data}
        if not data.get("name") and isinstance(data.get("type"), str):
            data["name"] = data["type"]  # not the key, which may be the source's only secret
        config = validate_source(self.registry, data, origin="api")
        if config.key in self._declared():
            raise ApiError(409, "source_exists", f"source {config.key!r} is declared in gateway.yaml")
        options = {k: v for k, v in data.items() if k not in COLUMN_FIELDS}
        now = utcnow()

        def work(conn):
            if conn.execute(select(SourceRow.key).where(SourceRow.key == config.key)).first():
                raise ApiError(409, "source_exists", f"source {config.key!r} already exists")
            conn.execute(insert(sources_table).values(
                key=config.key, type=config.type, name=config.name, enabled=config.enabled, options=options,
                created_at=now, updated_at=now))

        run_in_transaction(self.engine, work)
        return self.stored(config.key), options.get("token") or None

    def ensure_changeable(self, key: str) -> None:
        """Refuse to change a source of gateway.yaml: the file is where it is changed."""
        if key in self._declared():
            raise ApiError(409, "read_only", f"source {key!r} is declared in gateway.yaml; edit the file instead")

    def patch(self, key: str, change: Mapping[str, Any]) -> tuple[Any, Optional[str]]:
        """Change ``name``, ``enabled`` or ``token`` (``rotate_token`` makes a new one); returns the row
        and the new token when one was made."""
        self.ensure_changeable(key)
        row = self.stored(key)
        if row is None:
            raise ApiError(404, "not_found", f"no source {key!r}")
        options = dict(row.options)
        new_token = None
        if change.get("rotate_token"):
            new_token = options["token"] = secrets.token_urlsafe(24)
        elif "token" in change:
            options["token"] = change["token"]
        name = change.get("name", row.name)
        enabled = change.get("enabled", row.enabled)
        validate_source(self.registry, {"key": key, "type": row.type, "name": name, "enabled": enabled, **options})
        run_in_transaction(self.engine, lambda conn: conn.execute(
            update(sources_table).where(SourceRow.key == key)
            .values(name=name, enabled=enabled, options=options, updated_at=utcnow())))
        return self.stored(key), new_token

    def _activated_row(self, row: Any) -> ActiveSource:
        """Activated once per version of the row (its ``updated_at``)."""
        with self._lock:
            cached = self._activated.get(row.key)
            if cached is None or cached[0] != row.updated_at:
                config = validate_source(
                    self.registry,
                    {"key": row.key, "type": row.type, "name": row.name, "enabled": row.enabled, **row.options},
                    origin="api",
                )
                cached = self._activated[row.key] = (row.updated_at, activate(self.registry, config))
            return cached[1]
