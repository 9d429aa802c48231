"""Faults of the gateway and its database never leave deliveries waiting out a lease, nor send one twice.

Real processes (``gateway serve``, ``gateway worker``) are stopped with SIGTERM or killed with
SIGKILL and another takes over; a database blip is a TCP hop in front of PostgreSQL that drops
every connection and refuses new ones for 3 s.  After each fault, every pending row must be
delivered within 10 s of the gateway or the database being back (issue 11), and the receiver,
which counts ``X-Gateway-Delivery-Id``, must see each row once: only a kill in the middle of a
request may repeat that one request.
"""
from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
from testkit.support import TcpProxy, admin_client, free_port, wait_healthy, wait_until

from test_outbox_workers import CONFIG, GATEWAY, gateway_env, whatap_alert

ALERTS = 20
BACK_WITHIN = 10.0
IN_FLIGHT = 3
"""Requests answered before the receiver holds the next one, in flight when the test injects its fault."""


def queue_alerts(app) -> None:
    client = app.test_client()
    for n in range(ALERTS):
        assert client.post("/hooks/whatap/whatap-prod/", json=whatap_alert(n)).status_code == 202


def start_worker(env, log, *options: str) -> subprocess.Popen:
    worker = subprocess.Popen([GATEWAY, "worker", *options], env=env, stdout=subprocess.PIPE, text=True, stderr=log)
    assert worker.stdout.readline().startswith("worker delivering for sinks: spaceone")
    return worker


@contextmanager
def running_worker(env, log, *options: str):
    """A ``gateway worker`` for the block; SIGTERM at its end must stop it cleanly."""
    worker = start_worker(env, log, *options)
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, "the worker did not stop cleanly"


def held_rows(api) -> list[dict]:
    """Pending rows someone holds a claim on (the API does not show claims: read them in the database)."""
    from gateway.store.models import DeliveryRow
    from sqlalchemy import select

    engine = api.application.extensions["gateway"].engine
    with engine.connect() as conn:
        return conn.execute(select(DeliveryRow.id, DeliveryRow.claimed_by)
                            .where(DeliveryRow.status == "pending", DeliveryRow.claimed_by.is_not(None))).all()


def all_delivered_within(api, seconds: float, rows: int = ALERTS) -> float:
    """Seconds until every row is delivered; fails after ``seconds``."""
    started = time.monotonic()
    wait_until(lambda: api.get("/api/deliveries?status=delivered").json["total"] == rows, timeout=seconds,
               interval=0.1)
    return time.monotonic() - started


def sends(receiver) -> Counter:
    return Counter(r["headers"]["X-Gateway-Delivery-Id"] for r in receiver.requests)


@pytest.fixture
def outbox_app(make_app, receiver):
    receiver.delay = 0.1  # deliveries take a moment
    receiver.hold(after=IN_FLIGHT)  # and the next one waits for the fault (``fault_injected``)
    app = make_app(CONFIG.format(receiver=receiver.url))
    queue_alerts(app)
    return app


def in_flight(receiver) -> bool:
    """The receiver holds a delivery (and the rest of the batch waits behind it): time for the fault."""
    return len(receiver.requests) > IN_FLIGHT


def fault_injected(receiver, pace: float = 0.0) -> None:
    """Answer the held delivery, and the next ones after ``pace`` seconds each."""
    receiver.delay = pace
    receiver.release()


def start_delivering(command: str, env, log) -> subprocess.Popen:
    """``gateway serve`` (one worker) or ``gateway worker``, once it delivers."""
    if command == "worker":
        return start_worker(env, log)
    port = free_port()
    server = subprocess.Popen([GATEWAY, "serve", "--workers", "1", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    wait_healthy(f"http://127.0.0.1:{port}", server, timeout=60)  # booting took 15 s on a machine under load
    return server


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_sigterm_hands_back_every_claim(command, outbox_app, receiver, database_url, tmp_path):
    env = gateway_env(outbox_app, database_url)
    api = admin_client(outbox_app)
    with open(tmp_path / "first.log", "w") as log, open(tmp_path / "worker.log", "w") as worker_log:
        first = start_delivering(command, env, log)
        try:
            wait_until(lambda: in_flight(receiver), timeout=15)
        finally:
            first.send_signal(signal.SIGTERM)
            # Slow sends: if the gateway is slow to act on SIGTERM, its batch is far from done when it does.
            fault_injected(receiver, pace=0.5)
            assert first.wait(timeout=30) == 0, (tmp_path / "first.log").read_text()
        assert held_rows(api) == [], "a stopped gateway still holds claims"
        assert api.get("/api/deliveries?status=delivered").json["total"] < ALERTS
        receiver.delay = 0
        with running_worker(env, worker_log):
            all_delivered_within(api, BACK_WITHIN)
    assert set(sends(receiver).values()) == {1}


def test_a_killed_worker_s_rows_are_taken_up_within_seconds(outbox_app, receiver, database_url, tmp_path):
    env = gateway_env(outbox_app, database_url)
    api = admin_client(outbox_app)
    with open(tmp_path / "worker.log", "w") as log:
        first = start_worker(env, log)
        wait_until(lambda: in_flight(receiver), timeout=15)
        first.kill()
        first.wait(timeout=10)
        fault_injected(receiver)
        held = {str(row.id) for row in held_rows(api)}
        assert held, "the killed worker held nothing: the test proves nothing"
        with running_worker(env, log):
            all_delivered_within(api, BACK_WITHIN)
    counts = sends(receiver)
    repeated = {delivery for delivery, count in counts.items() if count > 1}
    # Sent again: only rows the killed worker still held (in flight in one of its senders, or delivered with
    # the outcome not yet written: outcomes are written together every RECORD_INTERVAL), each once more at most.
    assert repeated <= held and max(counts.values()) <= 2, (counts, held)


def test_a_database_blip_delays_deliveries_only_while_it_lasts(outbox_app, receiver, database_url, tmp_path):
    if not database_url.startswith("postgresql"):
        pytest.skip("a database server to lose is PostgreSQL's; SQLite is a file in the process")
    target = urlsplit(database_url.replace("postgresql+psycopg", "postgresql"))
    proxy = TcpProxy(target.hostname, target.port or 5432)
    env = gateway_env(outbox_app, database_url.replace(f"@{target.netloc.split('@')[1]}",
                                                       f"@127.0.0.1:{proxy.port}"))
    api = admin_client(outbox_app)
    try:
        with open(tmp_path / "worker.log", "w") as log, running_worker(env, log):
            wait_until(lambda: in_flight(receiver), timeout=15)
            proxy.down()
            fault_injected(receiver)  # its outcome is written across the blip
            time.sleep(3)
            proxy.up()
            all_delivered_within(api, BACK_WITHIN)
    finally:
        proxy.down()
    assert "lost" in (tmp_path / "worker.log").read_text() or "failed" in (tmp_path / "worker.log").read_text(), \
        "the worker never noticed the blip: the test proves nothing"
    twice = [delivery for delivery, count in sends(receiver).items() if count > 1]
    assert not twice, {delivery: api.get(f"/api/deliveries/{delivery}").json["attempt_log"] for delivery in twice}


OUTAGE_CONFIG = CONFIG.replace("/events\n", "/events\n    backoff_initial: 50ms\n    backoff_max: 200ms\n")
OUTAGE_PROBLEMS = 4
"""Alerts of the outage test, each followed by its recovery: the paused sink sends one probe per 0.2 s,
so 4 alerts tried 9 times each take some 7 s."""


def test_a_spaceone_outage_loses_nothing_and_keeps_each_recovery_after_its_alert(make_app, receiver,
                                                                                 database_url, tmp_path):
    """With the default retry limits, rows outlive an outage of many more attempts than the old
    budget of 8 (a 200 ms backoff cap and a 0.1 s poll make that a few seconds)."""
    app = make_app(OUTAGE_CONFIG.format(receiver=receiver.url))
    api, client = admin_client(app), app.test_client()
    receiver.default = (503, {}, "maintenance")
    with open(tmp_path / "worker.log", "w") as log:
        with running_worker(gateway_env(app, database_url), log, "--poll", "0.1"):  # retries fall due at polls
            for n in range(OUTAGE_PROBLEMS):
                assert client.post("/hooks/whatap/whatap-prod/", json=whatap_alert(n)).status_code == 202
                recovery = {**whatap_alert(n), "status": "off", "uuid": f"r{n}"}
                assert client.post("/hooks/whatap/whatap-prod/", json=recovery).status_code == 202

            def past_the_old_budget() -> bool:  # every alert tried more than 8 times; its recovery waits (0)
                rows = api.get("/api/deliveries?per_page=100").json["items"]
                return {row["attempts"] > 8 for row in rows if row["attempts"]} == {True} and \
                    {row["status"] for row in rows} == {"pending"}

            wait_until(past_the_old_budget, timeout=60, interval=0.2)
            receiver.default = (200, {}, "{}")
            all_delivered_within(api, BACK_WITHIN, rows=2 * OUTAGE_PROBLEMS)
    assert api.get("/api/deliveries?status=dead").json["total"] == 0
    accepted = [r["json"] for r in receiver.requests if r["status"] == 200]
    assert len(accepted) == 2 * OUTAGE_PROBLEMS
    for n in range(OUTAGE_PROBLEMS):
        kinds = [event["event_type"] for event in accepted if event["title"].endswith(f"problem {n}")]
        assert kinds == ["ALERT", "RECOVERY"], (n, kinds)
