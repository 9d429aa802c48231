"""A real ``gateway serve --workers 2`` (gunicorn) on SQLite, spoken to over HTTP on 127.0.0.1."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
import testkit
from testkit.support import (
    csrf_of, free_port, installed_sink_types, output, printed, serve_environment, serving, wait_until, worker_pids,
)

GATEWAY = str(Path(sys.executable).parent / "gateway")
TOKEN = "serve-admin-token"
CONFIG = """
global:
  max_body_size: 1KiB
sources:
  - key: src
    type: testsrc
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""
LATE_SOURCE = "  - key: late\n    type: testsrc\nsinks:"


@pytest.fixture
def environment(tmp_path, write_config):
    return serve_environment(tmp_path, write_config(CONFIG), f"sqlite:///{tmp_path / 'gateway.db'}",
                             GATEWAY_ADMIN_TOKEN=TOKEN,
                             GATEWAY_THREADS="2", GATEWAY_KEEPALIVE_REQUESTS="5")


@pytest.fixture
def server(environment):
    subprocess.run([GATEWAY, "db", "upgrade"], env=environment, check=True, capture_output=True, timeout=60)
    with serving(environment) as (proc, base):
        yield proc, base, Path(environment["GATEWAY_CONFIG"])


def post(base: str, key: str, external_id: str) -> int:
    return requests.post(f"{base}/hooks/testsrc/{key}/", json={"id": external_id, "title": "disk"}, timeout=5).status_code


def metric(base: str, name: str, **labels: str) -> float:
    return testkit.metric(requests.get(f"{base}/metrics", timeout=5).text, name, **labels)


def chunked_post(base: str, path: str, chunks: list[bytes]) -> tuple[int, dict]:
    """A body sent without Content-Length: the size limit must hold while streaming."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("POST", path, body=iter(chunks), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    response = conn.getresponse()
    answer = response.status, json.loads(response.read())
    conn.close()
    return answer


def test_serve_counts_across_workers_reloads_on_sighup_and_stops_cleanly(server):
    proc, base, config = server
    assert metric(base, "gateway_config_last_reload_successful") == 1  # started on a valid file
    assert [post(base, "src", f"n{n}") for n in range(20)] == [202] * 20
    assert metric(base, "gateway_webhooks_received_total", source="src") == 20
    assert metric(base, "gateway_webhooks_accepted_total", source="src", outcome="accepted") == 20
    assert requests.get(f"{base}/api/events?source=src", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=5).json()["total"] == 20

    status, body = chunked_post(base, "/hooks/testsrc/src/", [b'{"pad": "', b"x" * 800, b"x" * 800, b'"}'])
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert metric(base, "gateway_webhooks_rejected_total", source="src", reason="body_too_large") == 1

    assert post(base, "late", "before") == 404
    config.write_text(config.read_text().replace("sinks:", LATE_SOURCE, 1))
    proc.send_signal(signal.SIGHUP)
    sent = iter(range(1000))
    wait_until(lambda: all(post(base, "late", f"l{next(sent)}") == 202 for _ in range(8)))  # every worker

    config.write_text(config.read_text().replace("type: itms", "type: nope"))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: metric(base, "gateway_config_last_reload_successful") == 0)
    assert [post(base, "late", f"after{n}") for n in range(8)] == [202] * 8
    wait_until(lambda: not any(requests.get(f"{base}/health", timeout=5).json()["config"]["last_reload_ok"]
                               for _ in range(6)))

    # A worker replaced while the file is broken boots with the last valid config instead of failing (and stopping the server).
    killed = worker_pids(base).pop()
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: len(pids := worker_pids(base)) == 2 and killed not in pids, timeout=30)
    assert [post(base, "late", f"replaced{n}") for n in range(8)] == [202] * 8
    assert metric(base, "gateway_config_last_reload_successful") == 0

    proc.send_signal(signal.SIGTERM)
    printed = output(proc)
    assert proc.returncode == 0, printed


def test_serve_never_prints_the_admin_token_the_operator_set(server):
    proc, base, _ = server
    banner = printed(proc, "  health:")  # printed before gunicorn starts
    assert TOKEN not in "".join(banner)
    assert f'  API: curl -H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN" {base}/api/incidents\n' in banner


def test_a_keep_alive_connection_is_closed_after_its_fifth_request(server):
    """So a sender's pooled connections cannot stay pinned to one worker (GATEWAY_KEEPALIVE_REQUESTS=5 here)."""
    _, base, _ = server
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    answers = []
    for n in range(5):
        conn.request("POST", "/hooks/testsrc/src/", body=json.dumps({"id": f"k{n}", "title": "disk"}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        answers.append((response.status, response.getheader("Connection")))
    conn.close()
    assert answers == [(202, "keep-alive")] * 4 + [(202, "close")]


def test_serve_refuses_an_invalid_config(environment):
    path = environment["GATEWAY_CONFIG"]
    Path(path).write_text(textwrap.dedent(CONFIG).replace("type: itms", "type: nope"))
    result = subprocess.run([GATEWAY, "serve", "--port", str(free_port())], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{path}:9: sinks[0].type: unknown sink type 'nope' (registered: {installed_sink_types()})" in (
        result.stderr.splitlines())
    assert "Gateway on" not in result.stdout


def test_every_worker_reports_a_failed_reload_alike_and_logs_it_as_json(environment):
    """After SIGHUP on a broken file, /health's config part is the same whichever worker answers,
    a worker started meanwhile included; the log is JSON lines, one per request, ids included.
    A source's rate limit holds across the workers."""
    environment = {**environment, "GATEWAY_LOG_FORMAT": "json"}
    config = Path(environment["GATEWAY_CONFIG"])
    config.write_text(config.read_text().replace("sinks:", "  - key: lim\n    type: testsrc\n    rate_limit: 1/h\n"
                                                           "    burst: 3\nsinks:", 1))
    subprocess.run([GATEWAY, "db", "upgrade"], env=environment, check=True, capture_output=True, timeout=60)
    with serving(environment) as (proc, base):
        assert sorted(post(base, "lim", f"lim{n}") for n in range(10)) == [202] * 3 + [429] * 7

        def reports() -> dict[int, str]:
            answers = [requests.get(f"{base}/health", timeout=5).json() for _ in range(10)]
            return {answer["worker_pid"]: json.dumps(answer["config"], sort_keys=True) for answer in answers}

        config.write_text(config.read_text().replace("type: itms", "type: nope"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metric(base, "gateway_config_last_reload_successful") == 0)
        wait_until(lambda: len(reports()) == 2)
        reported = set(reports().values())
        assert len(reported) == 1
        report = json.loads(reported.pop())
        assert report["last_reload_ok"] is False and "unknown sink type 'nope'" in report["last_reload_error"]

        killed = worker_pids(base).pop()
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: len(pids := worker_pids(base)) == 2 and killed not in pids, timeout=30)
        assert set(reports().values()) == {json.dumps(report, sort_keys=True)}

        answer = requests.post(f"{base}/hooks/testsrc/src/", json={"id": "j1", "title": "t"},
                               headers={"X-Request-ID": "trace-77"}, timeout=5)
        assert (answer.status_code, answer.headers["X-Request-ID"]) == (202, "trace-77")
        status, body = chunked_post(base, "/hooks/testsrc/src/", [b"x" * 2000])  # refused by the front
        assert status == 413
        proc.send_signal(signal.SIGTERM)
        lines = [json.loads(line) for line in output(proc).splitlines() if line.startswith("{")]
    webhook = [line for line in lines if line.get("request_id") == "trace-77"]
    assert [(line["method"], line["path"], line["source"], line["status"]) for line in webhook] == [
        ("POST", "/hooks/testsrc/<key>/", "src", 202)]
    assert any(line.get("status") == 413 and line["logger"] == "gateway.requests" for line in lines)
    assert any(line["level"] == "error" and "config reload failed" in line["message"] for line in lines)


def test_first_run_prints_the_admin_password_once_and_every_worker_shares_the_session(environment, tmp_path,
                                                                                    monkeypatch):
    """`make run` on an empty database: the generated password signs in, on whichever worker
    answers (they share the key generated once in instance/), and the token from the
    environment is never printed."""
    env = {k: v for k, v in environment.items() if k != "GATEWAY_SECRET_KEY"}
    monkeypatch.chdir(tmp_path)  # instance/ is made in the working directory
    subprocess.run([GATEWAY, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=60)
    with serving(env) as (proc, base):
        banner = printed(proc, "API:")
        text = "".join(banner)
        assert TOKEN not in text and "$GATEWAY_ADMIN_TOKEN" in text and f"console: {base}/" in text
        password = text.split("created user 'admin' with password ", 1)[1].split()[0]
        assert (tmp_path / "instance" / "secret_key").exists()
        browser = requests.Session()
        csrf = csrf_of(browser.get(f"{base}/login", timeout=5))
        signed_in = browser.post(f"{base}/login", data={"username": "admin", "password": password, "csrf_token": csrf},
                                 timeout=10)
        assert signed_in.status_code == 200 and signed_in.url == f"{base}/incidents"
        for _ in range(8):  # keep-alive closes after 5 requests: new connections, which either worker may take
            assert browser.get(f"{base}/incidents", timeout=5, allow_redirects=False).status_code == 200
