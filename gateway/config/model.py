"""The loaded configuration: what every other part of the gateway reads, and the problems of an invalid file."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping, Optional

DEFAULT_PATH = "config/gateway.yaml"
DEFAULT_RETENTION = 30 * 86400.0
DEFAULT_MAX_BODY_SIZE = 1024 * 1024

TOP_LEVEL_KEYS = ("global", "sources", "sinks", "route")
ROUTE_KEYS = ("match", "sinks", "continue", "reopen_window", "routes")
MATCH_KEYS = ("source", "source_type", "severity", "status")

NAME = r"[A-Za-z0-9._-]{1,64}"
"""Source keys and sink names: they appear in URLs, sink names also in metric labels."""
NAME_PATTERN = re.compile(rf"^{NAME}\Z")


@dataclass(frozen=True)
class SourceConfig:
    """A source from the file (``origin="file"``) or the API; build it with ``validate_source``
    so that ``options`` knows its secrets."""

    key: str
    type: str
    name: str
    enabled: bool
    options: dict
    line: Optional[int]
    origin: str = "file"


@dataclass(frozen=True)
class SinkConfig:
    name: str
    type: str
    options: dict
    line: Optional[int]


@dataclass(frozen=True)
class Route:
    """One routing node; ``sinks`` and ``reopen_window`` are already inherited from the parent."""

    match: Mapping[str, tuple[str, ...]]
    sinks: tuple[str, ...]
    continue_: bool
    reopen_window: Optional[float]
    routes: tuple["Route", ...]
    line: Optional[int]


@dataclass(frozen=True)
class GatewayConfig:
    path: str
    sources: dict[str, SourceConfig]
    sinks: dict[str, SinkConfig]
    route: Route
    retention: float
    max_body_size: int
    external_url: Optional[str] = None
    default_language: str = "ko"
    timezone: str = "Asia/Seoul"
    loaded_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: Optional[int]
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path}: {self.message}"


class ConfigError(Exception):
    """The file is invalid; ``problems`` lists everything wrong with it, in file order."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def count_routes(route: Route) -> int:
    """Routes below ``route``, recursively (the root itself is not counted)."""
    return sum(1 + count_routes(child) for child in route.routes)


def summary(config: GatewayConfig) -> str:
    """One line for ``config check``: ``OK: 2 sources, 2 sinks, 3 routes``."""

    def n(count: int, noun: str) -> str:
        return f"{count} {noun}{'' if count == 1 else 's'}"

    return (
        f"OK: {n(len(config.sources), 'source')}, {n(len(config.sinks), 'sink')}, "
        f"{n(count_routes(config.route), 'route')}"
    )
