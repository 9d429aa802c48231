"""Per-source rate limits: a token bucket in the database, held by every app (worker, process) on it."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import testkit
from testkit.support import admin_client

from gateway import metrics
from gateway.config import ConfigError, RateLimit, load_config
from gateway.pipeline import ratelimit
from gateway.plugins import build_registry

LIMITED = """
sources:
  - key: src
    type: testsrc
    rate_limit: 1/h
    burst: 2
  - key: free
    type: testsrc
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""


def post(client, key: str, n: int):
    return client.post(f"/hooks/testsrc/{key}/", json={"id": f"{key}-{n}-{time.monotonic_ns()}", "title": "t"})


def rejected() -> float:
    return metrics.WEBHOOKS_REJECTED.labels("src", "rate_limited")._value.get()


def test_a_source_past_its_burst_is_answered_429_with_retry_after_and_counted(make_app):
    client = make_app(LIMITED).test_client()
    before = rejected()
    answers = [post(client, "src", n) for n in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    refused = answers[-1]
    assert refused.json["error"]["code"] == "rate_limited"
    assert 3590 <= int(refused.headers["Retry-After"]) <= 3600  # one token an hour
    assert rejected() == before + 1
    assert [post(client, "free", n).status_code for n in range(5)] == [202] * 5  # another source is not held


def test_the_bucket_is_shared_by_every_process_on_the_database(make_app):
    """Two apps (two engines, as two workers or two machines) take from one bucket."""
    first, second = make_app(LIMITED).test_client(), make_app(LIMITED).test_client()
    answers = [post(client, "src", n).status_code for n, client in enumerate([first, second, first, second])]
    assert answers == [202, 202, 429, 429]
    events = admin_client(first.application).get("/api/events?source=src").json["total"]
    assert events == 2


def test_tokens_come_back_at_the_rate(make_app, monkeypatch):
    # The bucket's clock, moved by hand: a request that stalls half a second must not refill it.
    now = [time.time()]
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: now[0]))
    client = make_app(LIMITED.replace("1/h", "2/s").replace("burst: 2", "burst: 1")).test_client()
    assert [post(client, "src", n).status_code for n in range(2)] == [202, 429]
    now[0] += 0.45
    assert post(client, "src", 3).status_code == 429  # not a whole token back yet
    now[0] += 0.1
    assert post(client, "src", 4).status_code == 202


def test_an_api_source_keeps_its_rate_limit(app):
    api = admin_client(app)
    created = api.post("/api/sources", json={"type": "testsrc", "rate_limit": "1/h"})
    assert created.status_code == 201, created.json
    client = app.test_client()
    answers = [client.post(f"/hooks/testsrc/{created.json['key']}/", json={"id": str(n), "title": "t"}).status_code
               for n in range(3)]
    assert answers == [202, 429, 429]  # the default burst: one second's worth, at least 1


@pytest.mark.parametrize("fields, problem", [
    ("rate_limit: 100/x", "sources[0].rate_limit: '100/x' is not a rate (use e.g. 100/s, 30/m, 500/h)"),
    ("rate_limit: 0/s", "sources[0].rate_limit: a rate must be positive"),
    ("burst: 5", "sources[0].burst: burst needs a rate_limit"),
])
def test_a_bad_rate_limit_is_a_config_problem(tmp_path, fields, problem):
    path = tmp_path / "gateway.yaml"
    path.write_text(f"sources:\n  - key: s\n    type: testsrc\n    {fields}\nsinks:\n  - name: itms\n    type: itms\nroute:\n  sinks: [itms]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, build_registry(extra_plugins=[testkit]), {})
    assert [f"{p.path}: {p.message}" for p in info.value.problems] == [problem]


def test_the_default_burst_is_one_seconds_worth(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("sources:\n  - key: s\n    type: testsrc\n    rate_limit: 100/s\nsinks:\n  - name: itms\n    type: itms\nroute:\n  sinks: [itms]\n")
    assert load_config(path, build_registry(extra_plugins=[testkit]), {}).sources["s"].rate_limit == RateLimit(100, 100)
