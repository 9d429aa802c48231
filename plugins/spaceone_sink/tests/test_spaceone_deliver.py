"""deliver() against a real HTTP server: one attempt, classified for the core's retry loop."""
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from gateway import Delivery, PermanentError, RetryableError
from gateway_spaceone import event_body
from gateway_spaceone.sink import parse_retry_after


def delivery(alert, id=41, attempt=1):
    return Delivery(id=id, attempt=attempt, sink_name="spaceone-test", alert=alert)


def test_posts_the_event_body(spaceone, make_sink, make_alert):
    sink = make_sink(url=spaceone.url)
    alert = make_alert()
    sink.deliver(delivery(alert))
    [request] = spaceone.requests
    assert request.path == "/monitoring/v1/webhook/webhook-abc123/AccessKey16chars/events"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == event_body(alert)
    assert request.body["title"] == "CPU 사용률 임계값 초과"  # Korean survives the wire


def test_alert_then_recovery_share_event_key(spaceone, make_sink, make_alert):
    sink = make_sink(url=spaceone.url, account="acc-1")
    sink.deliver(delivery(make_alert(), id=1))
    sink.deliver(delivery(make_alert(status="resolved"), id=2))
    firing, recovery = (r.body for r in spaceone.requests)
    assert (firing["event_type"], recovery["event_type"]) == ("ALERT", "RECOVERY")
    assert firing["event_key"] == recovery["event_key"] == "9f2c1e0b7a4d4c1e8b3f6a2d5c7e9f01"
    assert recovery["account"] == "acc-1"
    assert recovery["provider"] == "whatap"


def test_configured_headers_and_delivery_id(spaceone, make_sink, make_alert):
    """The delivery id is the idempotency key: the same on every attempt of one row."""
    sink = make_sink(url=spaceone.url, headers={"X-Proxy-Auth": "s3cret", "X-Gateway-Delivery-Id": "forged"})
    sink.deliver(delivery(make_alert(), id=77, attempt=1))
    sink.deliver(delivery(make_alert(), id=77, attempt=2))
    for request in spaceone.requests:
        assert request.headers["X-Proxy-Auth"] == "s3cret"
        assert request.headers["X-Gateway-Delivery-Id"] == "77"


@pytest.mark.parametrize("status", [200, 202, 204])
def test_2xx_is_success(spaceone, make_sink, make_alert, status):
    spaceone.respond(status, body="" if status == 204 else "{}")
    assert make_sink(url=spaceone.url).deliver(delivery(make_alert())) is None
    assert len(spaceone.requests) == 1


def test_503_is_retryable_and_attempted_once(spaceone, make_sink, make_alert):
    spaceone.respond(503, body="upstream unavailable")
    with pytest.raises(RetryableError, match="SpaceONE answered 503: upstream unavailable") as info:
        make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert (info.value.status_code, info.value.response, info.value.retry_after) == (
        503, "upstream unavailable", None)
    assert len(spaceone.requests) == 1  # no hidden urllib3 retries: the core owns retrying


def test_429_retry_after_seconds(spaceone, make_sink, make_alert):
    spaceone.respond(429, {"Retry-After": "30"}, body='{"error": "slow down"}')
    with pytest.raises(RetryableError) as info:
        make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert (info.value.status_code, info.value.retry_after) == (429, 30.0)


def test_429_retry_after_http_date(spaceone, make_sink, make_alert):
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    spaceone.respond(429, {"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(RetryableError) as info:
        make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert 110 < info.value.retry_after <= 120


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("soon", None), ("nan", None), ("1.5", 1.5),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: retry now, not never
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date_relative_to_now():
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=timezone.utc).timestamp()
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 60.0


DISABLED = ('{"detail": {"code": "ERROR_WEBHOOK_STATE_DISABLED", '
            '"message": "Webhook state is disabled. (webhook_id = webhook-abc123)"}}')
"""SpaceONE's answer while its webhook is disabled: python-core's REST layer puts the error in ``detail``."""


def test_disabled_webhook_400_is_retryable(spaceone, make_sink, make_alert):
    spaceone.respond(400, {"Content-Type": "application/json"}, body=DISABLED)
    with pytest.raises(RetryableError, match="webhook is disabled; retrying until it is enabled") as info:
        make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert (info.value.status_code, info.value.response, info.value.retry_after) == (400, DISABLED, None)


def test_delivery_period_sets_the_event_key(spaceone, make_sink, make_alert):
    sink = make_sink(url=spaceone.url)
    sink.deliver(Delivery(id=5, attempt=1, sink_name="spaceone-test", alert=make_alert(), period=3, refresh=True))
    assert spaceone.requests[0].body["event_key"] == "9f2c1e0b7a4d4c1e8b3f6a2d5c7e9f01-3"


def test_delivery_fingerprint_keys_a_group_recovery_by_its_member(spaceone, make_sink, make_alert):
    sink = make_sink(url=spaceone.url)
    recovery = make_alert(status="resolved")
    sink.deliver(Delivery(id=6, attempt=1, sink_name="spaceone-test", alert=recovery, period=4, fingerprint="member"))
    assert (spaceone.requests[0].body["event_key"], spaceone.requests[0].body["event_type"]) == ("member-4", "RECOVERY")


@pytest.mark.parametrize("status, body", [
    (400, '{"detail": {"code": "ERROR_NOT_FOUND", "message": "Value not found. (webhook_id = w)"}}'),
    (400, '{"error_code": "ERROR_INVALID_PARAMETER", "message": "event_key required"}'),
    (400, "not json"),
    (403, '{"error_code": "ERROR_PERMISSION_DENIED"}'),
    (404, "webhook not found"),
])
def test_client_errors_are_permanent(spaceone, make_sink, make_alert, status, body):
    spaceone.respond(status, body=body)
    with pytest.raises(PermanentError, match=f"SpaceONE answered {status}: ") as info:
        make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert (info.value.status_code, info.value.response) == (status, body)


def test_redirect_is_permanent_not_followed(spaceone, make_sink, make_alert):
    """Following a 302 would turn the POST into a GET and lose the event."""
    spaceone.respond(302, {"Location": "/elsewhere"}, body="")
    with pytest.raises(PermanentError) as info:
        make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert info.value.status_code == 302
    assert len(spaceone.requests) == 1


def test_a_cookie_spaceone_sets_is_never_sent_back(spaceone, make_sink, make_alert):
    """Each delivery stands alone: a load balancer's sticky cookie must not tie the next one to it."""
    spaceone.respond(200, {"Set-Cookie": "route=node-1; Path=/"})
    sink = make_sink(url=spaceone.url)
    sink.deliver(delivery(make_alert()))
    sink.deliver(delivery(make_alert()))
    assert [request.headers.get("Cookie") for request in spaceone.requests] == [None, None]


def test_long_response_is_truncated(spaceone, make_sink, make_alert):
    spaceone.respond(500, body="x" * 5000)
    with pytest.raises(RetryableError) as info:
        make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert info.value.response == "x" * 2000
    assert len(str(info.value)) < 300


def test_timeout_is_retryable(spaceone, make_sink, make_alert):
    spaceone.respond(200, delay=5)
    started = time.monotonic()
    with pytest.raises(RetryableError, match="did not answer within 0.2s") as info:
        make_sink(url=spaceone.url, timeout="200ms").deliver(delivery(make_alert()))
    assert time.monotonic() - started < 2
    assert info.value.status_code is None


def test_connection_refused_is_retryable_and_hides_the_access_key(make_sink, make_alert):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/monitoring/v1/webhook/webhook-abc/AccessKey16chars/events"
    with pytest.raises(RetryableError, match="could not reach SpaceONE") as info:
        make_sink(url=url).deliver(delivery(make_alert()))
    assert "AccessKey16chars" not in str(info.value)
    assert "webhook-abc/***/events" in str(info.value)


def test_dropped_connection_is_retryable(spaceone, make_sink, make_alert):
    spaceone.respond(drop=True)
    with pytest.raises(RetryableError, match="could not reach SpaceONE"):
        make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert len(spaceone.requests) == 1


def test_no_urllib3_retries(make_sink):
    """A hidden retry layer would multiply the core's max_attempts and skew its backoff."""
    sink = make_sink(url="https://so.example.com/monitoring/v1/webhook/w/k/events")
    for prefix in ("http://", "https://"):
        assert sink._endpoint.session.get_adapter(prefix).max_retries.total == 0


def test_close_releases_the_pool(spaceone, make_sink, make_alert):
    sink = make_sink(url=spaceone.url)
    sink.deliver(delivery(make_alert()))
    sink.close()
    assert all(not adapter.poolmanager.pools for adapter in sink._endpoint.session.adapters.values())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_proxy_set_in_the_environment_carries_the_post(spaceone, make_sink, make_alert, no_proxy_env):
    """The stand-in is the proxy here: it is sent the absolute URL of a destination never connected to."""
    no_proxy_env.setenv("HTTP_PROXY", spaceone.url.split("/monitoring/")[0])
    target = f"http://127.0.0.1:{closed_port()}/monitoring/v1/webhook/w/k/events"
    make_sink(url=target).deliver(delivery(make_alert()))
    assert [r.path for r in spaceone.requests] == [target]


def test_netrc_credentials_are_sent(spaceone, make_sink, make_alert, monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login bench password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    make_sink(url=spaceone.url).deliver(delivery(make_alert()))
    assert spaceone.requests[0].headers["Authorization"] == "Basic YmVuY2g6czNjcmV0"


def test_the_environment_is_read_once_when_the_sink_is_made(spaceone, make_sink, make_alert, no_proxy_env):
    """Not on every POST: requests' per-call scan of os.environ cost more CPU than the POST itself."""
    sink = make_sink(url=spaceone.url)
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # would refuse every POST
    sink.deliver(delivery(make_alert()))
    assert len(spaceone.requests) == 1
