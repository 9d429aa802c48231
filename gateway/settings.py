"""Process settings: the ``GATEWAY_*`` environment, read once into one object that is passed down.

``gateway.yaml`` says what the gateway does; these say where this process finds things (the
file, the database) and how it runs.  Nothing else in the gateway reads ``GATEWAY_*``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

from gateway.config.model import DEFAULT_PATH
from gateway.store.db import default_database_url


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _switch(text: Optional[str]) -> Optional[bool]:
    """An on/off variable: None when unset or empty (the default applies), off for 0, false or no
    in any case, else on."""
    return None if not text else text.strip().lower() not in ("0", "false", "no")


@dataclass(frozen=True)
class Settings:
    config_path: str = DEFAULT_PATH
    """``GATEWAY_CONFIG``: the operator's gateway.yaml."""
    database_url: str = field(default_factory=default_database_url)
    """``GATEWAY_DATABASE_URL``; SQLite in ``instance/`` by default."""
    admin_token: Optional[str] = None
    """``GATEWAY_ADMIN_TOKEN``: the bearer token of ``/api/*``; unset, the API is disabled."""
    disabled_plugins: frozenset[str] = frozenset()
    """``GATEWAY_DISABLE_PLUGINS=a,b``: entry points not loaded."""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """What ``${VAR}`` in gateway.yaml reads (the process environment); not in repr: it holds secrets."""
    last_good_config: Optional[str] = None
    """``GATEWAY_LAST_GOOD_CONFIG``: where ``gateway serve``'s workers keep the last valid file."""
    served_by_gunicorn: bool = False
    """``GATEWAY_SERVED_BY_GUNICORN``: a reload through the API also reloads the sibling workers."""
    dispatcher: bool = True
    """``GATEWAY_DISPATCHER=0`` (or false, no): ``gateway serve --no-dispatcher``, workers deliver nothing."""
    threads: Optional[int] = None
    """``GATEWAY_THREADS``: threads per gunicorn worker (None: the default for the database)."""
    keepalive_requests: int = 100
    """``GATEWAY_KEEPALIVE_REQUESTS``: requests on one connection before it is closed."""
    read_timeout: float = 30.0
    """``GATEWAY_READ_TIMEOUT``: seconds a request may take to arrive whole before the front answers 408."""
    sqlite_synchronous: str = "FULL"
    """``GATEWAY_SQLITE_SYNCHRONOUS``: FULL (a 202 survives power loss) or NORMAL (a process crash only)."""
    group_commit: Optional[bool] = None
    """``GATEWAY_GROUP_COMMIT=1`` or ``0``: whether concurrent webhooks' transactions commit together
    (``gateway.store.db.GroupCommit``); unset, the database's default (on for SQLite, off for PostgreSQL)."""
    log_format: str = "text"
    """``GATEWAY_LOG_FORMAT``: ``text`` or ``json`` (one object per line)."""
    forwarded_allow_ips: frozenset[str] = frozenset()
    """``GATEWAY_FORWARDED_ALLOW_IPS=10.0.0.0/8,127.0.0.1``: proxies whose X-Forwarded-* headers are believed."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        get = environ.get
        return cls(
            config_path=get("GATEWAY_CONFIG") or DEFAULT_PATH,
            database_url=get("GATEWAY_DATABASE_URL") or default_database_url(),
            admin_token=get("GATEWAY_ADMIN_TOKEN") or None,
            disabled_plugins=_names(get("GATEWAY_DISABLE_PLUGINS", "")),
            env=dict(environ),
            last_good_config=get("GATEWAY_LAST_GOOD_CONFIG") or None,
            served_by_gunicorn=bool(_switch(get("GATEWAY_SERVED_BY_GUNICORN"))),
            dispatcher=_switch(get("GATEWAY_DISPATCHER")) is not False,
            threads=int(get("GATEWAY_THREADS")) if get("GATEWAY_THREADS") else None,
            keepalive_requests=int(get("GATEWAY_KEEPALIVE_REQUESTS") or 100),
            read_timeout=float(get("GATEWAY_READ_TIMEOUT") or 30.0),
            sqlite_synchronous=get("GATEWAY_SQLITE_SYNCHRONOUS") or "FULL",
            group_commit=_switch(get("GATEWAY_GROUP_COMMIT")),
            log_format=(get("GATEWAY_LOG_FORMAT") or "text").lower(),
            forwarded_allow_ips=_names(get("GATEWAY_FORWARDED_ALLOW_IPS", "")),
        )
