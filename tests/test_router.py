"""Routing, exercised through real route trees as an operator writes them in gateway.yaml."""
import pytest

from gateway import Alert, SinkType, SourceType, hookimpl
from gateway.config import parse_config_text
from gateway.pipeline.router import Router
from gateway.plugins import build_registry


class Source(SourceType):
    name = "fakesrc"


class Sink(SinkType):
    name = "fakesink"


class Plugin:
    @hookimpl
    def register_source_types(self, register):
        register(Source)

    @hookimpl
    def register_sink_types(self, register):
        register(Sink)


REGISTRY = build_registry(extra_plugins=[Plugin()])
SINKS = "".join(f"  - {{name: {name}, type: fakesink}}\n" for name in "abcd")


def router(route_yaml: str) -> Router:
    """A Router for ``route:`` followed by ``route_yaml``, with sinks a, b, c and d defined."""
    config = parse_config_text(f"sinks:\n{SINKS}route:\n{route_yaml}", "test.yaml", REGISTRY, {})
    return Router(config.route)


def sinks(r: Router, source="web-prod", source_type="fakesrc", severity="critical", status="firing"):
    return r.decide(source, source_type, severity, status).sinks


def test_root_sinks_when_nothing_matches():
    r = router("  sinks: [a]\n  routes:\n    - {match: {severity: info}, sinks: [b]}\n")
    assert sinks(r, severity="warning") == ("a",)
    assert r.decide("web-prod", "fakesrc", "warning", "firing").matched == ("route",)


def test_first_match_wins():
    r = router("""\
  sinks: [a]
  routes:
    - {match: {severity: critical}, sinks: [b]}
    - {match: {source: web-prod}, sinks: [c]}
""")
    assert sinks(r) == ("b",)
    assert sinks(r, severity="error") == ("c",)


def test_continue_unions_sinks_until_a_match_without_continue():
    r = router("""\
  sinks: [a]
  routes:
    - {match: {severity: critical}, sinks: [a, b], continue: true}
    - {match: {source: web-prod}, sinks: [b, c]}
    - {match: {status: firing}, sinks: [d]}
""")
    decision = r.decide("web-prod", "fakesrc", "critical", "firing")
    assert decision.sinks == ("a", "b", "c")
    assert decision.matched == ("route", "route.routes[0]", "route.routes[1]")


def test_nested_routes_descend_and_fall_back_to_the_matching_parent():
    r = router("""\
  sinks: [a]
  routes:
    - match: {source: web-prod}
      sinks: [b]
      routes:
        - {match: {severity: critical}, sinks: [c]}
""")
    assert sinks(r) == ("c",)
    assert sinks(r, severity="info") == ("b",)
    assert sinks(r, source="other") == ("a",)


@pytest.mark.parametrize("source, expected", [("web-prod", ("b",)), ("web-", ("b",)), ("api-web-prod", ("a",))])
def test_source_globs(source, expected):
    r = router("  sinks: [a]\n  routes:\n    - {match: {source: 'web-*'}, sinks: [b]}\n")
    assert sinks(r, source=source) == expected


@pytest.mark.parametrize("severity, expected", [("critical", ("b",)), ("error", ("b",)), ("warning", ("a",))])
def test_list_values_match_any(severity, expected):
    r = router("  sinks: [a]\n  routes:\n    - {match: {severity: [critical, error]}, sinks: [b]}\n")
    assert sinks(r, severity=severity) == expected


def test_source_type_and_status_must_all_match():
    r = router("  sinks: [a]\n  routes:\n    - {match: {source_type: fakesrc, status: resolved}, sinks: [b]}\n")
    assert sinks(r, status="resolved") == ("b",)
    assert sinks(r, status="firing") == ("a",)
    assert sinks(r, source_type="other", status="resolved") == ("a",)


def test_reopen_window_comes_from_the_deepest_matching_route():
    r = router("""\
  sinks: [a]
  reopen_window: 1h
  routes:
    - match: {source: web-prod}
      reopen_window: 10m
      routes:
        - {match: {severity: critical}, sinks: [b]}
""")
    assert r.decide("web-prod", "fakesrc", "critical", "firing").reopen_window == 600
    assert r.decide("other", "fakesrc", "critical", "firing").reopen_window == 3600


def test_child_without_sinks_uses_its_parents():
    r = router("""\
  sinks: [a]
  routes:
    - match: {source: web-prod}
      sinks: [b, c]
      routes:
        - match: {severity: critical}
          reopen_window: 5m
""")
    decision = r.decide("web-prod", "fakesrc", "critical", "firing")
    assert (decision.sinks, decision.reopen_window) == (("b", "c"), 300)


def test_decide_alert_routes_on_the_alerts_own_fields():
    r = router("  sinks: [a]\n  routes:\n    - {match: {source: web-prod, status: resolved}, sinks: [b]}\n")
    alert = Alert(status="resolved", severity="info", title="ok", source_key="web-prod", source_type="fakesrc")
    assert r.decide_alert(alert).sinks == ("b",)
