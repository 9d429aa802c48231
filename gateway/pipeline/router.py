"""Decides which sinks an alert reaches: Alertmanager's routing tree, on our four labels.

Pure and fast, since it runs on every webhook: globs are compiled once in ``Router``,
and ``decide`` only compares strings.  The ``gateway routes test`` command uses the
same ``Router`` as ingest, so what it prints is what happens.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Optional

from gateway.config import Route
from gateway.contracts import Alert


@dataclass(frozen=True)
class RouteDecision:
    """Where an alert goes.  ``matched`` names every route that matched, root first
    (``route``, ``route.routes[0]``, ...), to explain the decision."""

    sinks: tuple[str, ...]
    reopen_window: Optional[float]
    matched: tuple[str, ...]


class _Matcher:
    """One match key: exact values in a set, globs (``source`` only) as compiled patterns."""

    __slots__ = ("label", "exact", "patterns")

    def __init__(self, label: str, values: tuple[str, ...]):
        globbed = label == "source"
        self.label = label
        self.exact = frozenset(v for v in values if not (globbed and _is_glob(v)))
        self.patterns = tuple(re.compile(fnmatch.translate(v)) for v in values if globbed and _is_glob(v))

    def __call__(self, labels: dict[str, str]) -> bool:
        value = labels[self.label]
        return value in self.exact or any(p.match(value) for p in self.patterns)


def _is_glob(value: str) -> bool:
    return any(c in value for c in "*?[")


class _Node:
    __slots__ = ("path", "matchers", "route", "children")

    def __init__(self, route: Route, path: str):
        self.path = path
        self.route = route
        self.matchers = tuple(_Matcher(label, values) for label, values in route.match.items())
        self.children = tuple(_Node(child, f"{path}.routes[{i}]") for i, child in enumerate(route.routes))

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m(labels) for m in self.matchers)


class Router:
    """Routes alerts through a config's route tree (``GatewayConfig.route``)."""

    def __init__(self, route: Route):
        self._root = _Node(route, "route")

    def decide(self, source_key: str, source_type: str, severity: str, status: str) -> RouteDecision:
        labels = {"source": source_key, "source_type": source_type, "severity": severity, "status": status}
        trail = ["route"]
        sinks, reopen_window = self._descend(self._root, labels, trail)
        return RouteDecision(sinks, reopen_window, tuple(trail))

    def decide_alert(self, alert: Alert) -> RouteDecision:
        return self.decide(alert.source_key, alert.source_type, alert.severity, alert.status)

    def _descend(self, node: _Node, labels: dict[str, str], trail: list[str]):
        """Sinks of a matched node: its matching children's (first wins unless ``continue``), else its own.

        The reopen window is the first matching branch's deepest route's.
        """
        sinks: dict[str, None] = {}
        reopen_window = None
        matched = False
        for child in node.children:
            if not child.matches(labels):
                continue
            trail.append(child.path)
            child_sinks, child_window = self._descend(child, labels, trail)
            if not matched:
                reopen_window = child_window
            matched = True
            sinks.update(dict.fromkeys(child_sinks))
            if not child.route.continue_:
                break
        if not matched:
            return node.route.sinks, node.route.reopen_window
        return tuple(sinks), reopen_window
