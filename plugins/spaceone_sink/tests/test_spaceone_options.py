"""Options validation (what `gateway config check` reports), accepts() and discovery."""
import logging

import pytest
from marshmallow import ValidationError

from gateway_spaceone import SpaceoneOptions, SpaceoneSink

URL = "https://monitoring-webhook.example.com/monitoring/v1/webhook/webhook-abc/KEY1234567890abc/events"


def load(**raw):
    return SpaceoneOptions().load(raw)


def test_defaults():
    options = load(url=URL)
    assert options["timeout"] == 10.0
    assert options["headers"] == {}
    assert options["verify_tls"] is True
    assert options["forward_manual_resolve"] is True
    assert options["account"] is None and options["providers"] == {}
    assert options["refresh_interval"] == 300.0
    assert (options["max_age"], options["max_attempts"]) == (86400.0, None)  # inherited from the core's SinkOptions


def test_durations_and_types_load():
    options = load(url=URL, timeout="500ms", headers={"X-Auth": "t"}, verify_tls=False, max_attempts=10)
    assert (options["timeout"], options["headers"], options["verify_tls"], options["max_attempts"]) == (
        0.5, {"X-Auth": "t"}, False, 10)


@pytest.mark.parametrize("raw, field", [
    ({}, "url"),
    ({"url": "ftp://example.com/monitoring/v1/webhook/w/k/events"}, "url"),
    ({"url": "monitoring-webhook.example.com/monitoring/v1/webhook/w/k/events"}, "url"),
    ({"url": "https:///monitoring/v1/webhook/w/k/events"}, "url"),
    ({"url": URL, "timeout": "soon"}, "timeout"),
    ({"url": URL, "timeout": "0s"}, "timeout"),
    ({"url": URL, "timeout": "31s"}, "timeout"),
    ({"url": URL, "timeout": "10m"}, "timeout"),
    ({"url": URL, "refresh_interval": "10m"}, "refresh_interval"),
    ({"url": URL, "refresh_interval": "11m"}, "refresh_interval"),
    ({"url": URL, "image_url": "https://example.com/i.png"}, "image_url"),
    ({"url": URL, "providers": {"oci": ""}}, "providers"),
    ({"url": URL, "headers": {"X-Auth": 5}}, "headers"),
    ({"url": URL, "headers": {"Bad Name": "v"}}, "headers"),
    ({"url": URL, "headers": {"X-Auth": "a\r\nInjected: 1"}}, "headers"),
    ({"url": URL, "verify_tls": "maybe"}, "verify_tls"),
    ({"url": URL, "endpoint": URL}, "endpoint"),
])
def test_invalid_options_name_the_field(raw, field):
    with pytest.raises(ValidationError) as info:
        SpaceoneOptions().load(raw)
    assert set(info.value.messages) == {field}


def test_timeout_may_be_the_delivery_deadline():
    assert load(url=URL, timeout="30s")["timeout"] == 30.0


def test_timeout_error_names_the_deadline():
    with pytest.raises(ValidationError, match="at most 30s, the deadline the gateway sets on every delivery"):
        load(url=URL, timeout="10m")


def test_scheme_error_is_explicit():
    with pytest.raises(ValidationError, match="http\\(s\\)"):
        load(url="ftp://example.com/x")


def test_url_is_a_secret():
    """The access key is in the path, so config dumps must mask the url."""
    assert SpaceoneOptions().fields["url"].metadata.get("secret") is True


def test_unusual_path_only_warns_and_hides_the_path(caplog):
    with caplog.at_level(logging.WARNING, logger="gateway_spaceone"):
        load(url="https://proxy.example.com/spaceone/SECRET-TOKEN")
    assert "does not look like /monitoring/v1/webhook" in caplog.text
    assert "SECRET-TOKEN" not in caplog.text


def test_webhook_path_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="gateway_spaceone"):
        load(url=URL)
    assert caplog.text == ""


@pytest.mark.parametrize("raw, refresh", [({}, 300.0), ({"refresh_interval": 599}, 599.0),
                                          ({"refresh_interval": 0}, None)])
def test_refresh_interval_below_ten_minutes_and_zero_turns_it_off(make_sink, raw, refresh):
    sink = make_sink(url=URL, **raw)
    assert sink.tracks_problems is True
    assert sink.refresh_interval() == refresh


@pytest.mark.parametrize("forward, expected", [(False, False), (True, True)])
def test_manual_resolve_can_be_turned_off(make_sink, make_alert, forward, expected):
    sink = make_sink(url=URL, forward_manual_resolve=forward)
    assert sink.accepts(make_alert()) is True
    assert sink.accepts(make_alert(status="resolved", origin="manual")) is expected


def test_discovered_through_the_entry_point(monkeypatch):
    """Installed as distribution gateway-spaceone, entry point ``spaceone`` in group ``gateway``."""
    import importlib.metadata

    from gateway.plugins import build_registry

    # Only this plugin is under test: other plugins being mid-change must not fail it.
    others = {ep.name for ep in importlib.metadata.entry_points(group="gateway")} - {"spaceone"}
    monkeypatch.setenv("GATEWAY_DISABLE_PLUGINS", ",".join(sorted(others)))
    registry = build_registry()
    assert registry.sink_types["spaceone"] is SpaceoneSink
    info = next(p for p in registry.plugins if p.name == "spaceone")
    assert (info.distribution, info.sink_types) == ("gateway-spaceone", ["spaceone"])
