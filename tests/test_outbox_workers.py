"""Two ``gateway worker`` processes on one database never deliver a row twice.

The workers are real subprocesses of the installed command, so the config uses only
installed plugins (whatap in, spaceone out); the receiver counts the delivery ids that
the spaceone sink sends in ``X-Gateway-Delivery-Id``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests
from testkit.support import admin_client, free_port, wait_healthy, wait_until

from gateway.pipeline.outbox import SENDERS

GATEWAY = str(Path(sys.executable).with_name("gateway"))
ALERTS = 200
CONFIG = """
sources:
  - key: whatap-prod
    type: whatap
sinks:
  - name: itms
    type: itms
  - name: spaceone
    type: spaceone
    url: {receiver}/monitoring/v1/webhook/wh-1/AbCdEf0123456789/events
    refresh_interval: 0
route:
  sinks: [itms, spaceone]
"""
"""whatap in, the incident store and SpaceONE (the test's receiver) out: installed plugins only.
No refreshes: each alert is delivered exactly once, and nothing stays queued."""


def gateway_env(app, database_url: str) -> dict:
    """The environment of ``gateway`` subprocesses: the app's database and config, and unbuffered
    output, so the worker's start-up line can be read as soon as it is printed."""
    return {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_CONFIG": app.config["CONFIG"],
            "PYTHONUNBUFFERED": "1"}


def whatap_alert(n: int) -> dict:
    """A firing WhaTap alert of its own (title ``problem {n}``, uuid ``u{n}``), as both tests post them."""
    return {"pcode": 1, "oid": 7, "title": f"problem {n}", "uuid": f"u{n}", "metricName": "cpu", "status": "on"}


def test_two_worker_processes_deliver_each_row_exactly_once(make_app, receiver, database_url, tmp_path):
    receiver.delay = 0.005  # deliveries take a moment, so both workers are busy at once
    # ... and the first requests wait until one more has come than a worker has senders: that one
    # can only come from the other worker, so both deliver rows (and compete for them) in any case.
    receiver.hold(until=SENDERS + 1)
    app = make_app(CONFIG.format(receiver=receiver.url))
    env = gateway_env(app, database_url)
    workers = []
    try:
        for n in range(2):
            workers.append(subprocess.Popen([GATEWAY, "worker"], env=env, stdout=subprocess.PIPE, text=True,
                                            stderr=open(tmp_path / f"worker{n}.log", "w")))
        for worker in workers:
            assert worker.stdout.readline().startswith("worker delivering for sinks: spaceone"), \
                (tmp_path / "worker0.log").read_text() + (tmp_path / "worker1.log").read_text()

        client = app.test_client()
        for n in range(ALERTS):
            r = client.post("/hooks/whatap/whatap-prod/", json=whatap_alert(n))
            assert r.status_code == 202, r.json
        api = admin_client(app)
        wait_until(lambda: api.get("/api/deliveries?status=delivered").json["total"] == ALERTS, timeout=60,
                   interval=0.2)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=30) for worker in workers]
    assert codes == [0, 0]

    rows = api.get("/api/deliveries", query_string={"per_page": 500}).json["items"]
    assert len(rows) == ALERTS
    assert {(row["status"], row["attempts"]) for row in rows} == {("delivered", 1)}
    sent = Counter(r["headers"]["X-Gateway-Delivery-Id"] for r in receiver.requests)
    assert sent == {str(row["id"]): 1 for row in rows}
    assert {r["json"]["title"] for r in receiver.requests} == {f"problem {n}" for n in range(ALERTS)}
    pids = {a["worker"].split(":")[-2] for row in rows for a in
            api.get(f"/api/deliveries/{row['id']}").json["attempt_log"]}
    assert pids == {str(worker.pid) for worker in workers}, "both workers should have delivered rows"


def test_a_worker_is_woken_by_rows_queued_in_another_process(make_app, receiver, database_url, tmp_path):
    """On PostgreSQL ``gateway serve --no-dispatcher`` NOTIFYs and ``gateway worker`` LISTENs; on
    SQLite the worker's watcher sees serve's commit.  With a 60 s poll, only the wake-up can explain
    a delivery within seconds."""
    app = make_app(CONFIG.format(receiver=receiver.url))
    env = gateway_env(app, database_url)
    port = free_port()
    logs = [open(tmp_path / name, "w") for name in ("worker.log", "serve.log")]
    worker = subprocess.Popen([GATEWAY, "worker", "--poll", "60"], env=env, stdout=subprocess.PIPE, text=True,
                              stderr=logs[0])
    server = subprocess.Popen([GATEWAY, "serve", "--no-dispatcher", "--workers", "1", "--port", str(port)],
                              env=env, stdout=logs[1], stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        assert worker.stdout.readline().startswith("worker delivering for sinks: spaceone")
        wait_healthy(base, server)

        def post_and_time(n: int) -> float:
            started = time.monotonic()
            r = requests.post(f"{base}/hooks/whatap/whatap-prod/", timeout=10, json=whatap_alert(n))
            assert r.status_code == 202, r.text
            wait_until(lambda: len(receiver.requests) == n, timeout=30, interval=0.01)
            return time.monotonic() - started

        post_and_time(1)  # the worker's first look may find this one; by the second it waits out its poll
        # A stalled commit or request costs a second or two; a worker that missed the wake-up waits out its poll.
        assert post_and_time(2) < 20, (tmp_path / "worker.log").read_text()
    finally:
        for proc in (worker, server):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in (worker, server)]
        for log in logs:
            log.close()
    assert codes == [0, 0], "".join((tmp_path / name).read_text() for name in ("worker.log", "serve.log"))

