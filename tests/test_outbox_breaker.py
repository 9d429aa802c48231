"""A sink whose destination keeps failing is paused (``gateway.pipeline.breaker``): one probe at a
time instead of every problem's retry, and its rows still go dead at ``max_age``."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from gateway.pipeline import breaker
from gateway.store.db import run_in_transaction
from gateway.store.models import DeliveryRow
from testkit.outbox import config, gateway_maker
from testkit.support import lock_waits, wait_until

SLOW_BACKOFF = {"backoff_initial": 0.3, "backoff_max": 5}


@pytest.fixture
def gateway(make_app, receiver):
    return gateway_maker(make_app, receiver)


def metric(gw, name: str, sink: str = "hook") -> float:
    text = gw.client.get("/metrics").get_data(as_text=True)
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(f'{name}{{sink="{sink}"}}')]
    return values[0] if values else 0.0


def test_failing_attempts_in_a_row_pause_the_sink_and_hand_back_the_rest_of_the_batch(gateway, receiver):
    gw = gateway(hook={"backoff_initial": 5, "backoff_max": 5})  # a pause of 5 s: the checks take far less
    receiver.default = (503, {}, "down")
    alerts = [gw.post(f"p{n}") for n in range(10)]
    assert gw.dispatcher.run_once("hook", gw.worker) == 10  # claimed ten, one per problem
    assert len(receiver.requests) == breaker.OPEN_AFTER  # the fifth failure paused the sink
    attempts = [gw.row(alert, "hook")["attempts"] for alert in alerts]
    assert attempts == [1] * breaker.OPEN_AFTER + [0] * (10 - breaker.OPEN_AFTER)  # the rest handed back untried
    assert all(gw.row(alert, "hook")["status"] == "pending" for alert in alerts)
    assert metric(gw, "gateway_sink_paused") == 1
    # Paused: nothing is claimed, though five rows are due now.
    assert gw.dispatcher.run_once("hook", gw.worker) == 0
    assert len(receiver.requests) == breaker.OPEN_AFTER


def test_probes_go_one_at_a_time_with_a_doubling_pause_and_a_delivery_resumes_everything(gateway, receiver):
    gw = gateway(hook=SLOW_BACKOFF)
    receiver.default = (503, {}, "down")
    alerts = [gw.post(f"p{n}") for n in range(10)]
    gw.dispatcher.run_once("hook", gw.worker)
    sink_breaker = gw.dispatcher.breaker("hook")
    assert sink_breaker.pause == pytest.approx(0.3)
    wait_until(lambda: sink_breaker.wait() == 0, timeout=2, interval=0.02)
    probed = time.monotonic()
    assert gw.dispatcher.run_once("hook", gw.worker) == 1  # the probe: one row
    assert len(receiver.requests) == breaker.OPEN_AFTER + 1
    # Failed: paused twice as long, from the probe's outcome (read from before it: a stall cannot flip it).
    assert sink_breaker.pause == pytest.approx(0.6) and sink_breaker.open_until >= probed + 0.6
    receiver.default = (200, {}, "{}")
    wait_until(lambda: sink_breaker.wait() == 0, timeout=2, interval=0.02)
    assert gw.dispatcher.run_once("hook", gw.worker) == 1  # delivered: the sink takes batches again
    assert sink_breaker.open_until is None and metric(gw, "gateway_sink_paused") == 0
    # Closed again: the next claims take all the rest.  (That rows still backing off are due at once
    # is test_outbox's test_a_sink_back_from_an_outage_gets_its_backlog_at_once: these are due already.)
    gw.drive("hook", lambda: all(gw.row(a, "hook")["status"] == "delivered" for a in alerts), timeout=5)


def test_a_row_the_destination_refuses_alone_does_not_pause_the_sink(gateway, receiver, caplog):
    """Only failures in a row count: a poison row between deliveries never adds up to a pause."""
    gw = gateway(hook=SLOW_BACKOFF)
    for n in range(12):
        gw.post(f"p{n}")
    receiver.answer(*[503] * (breaker.OPEN_AFTER - 1), 200, *[503] * (breaker.OPEN_AFTER - 1), 200, 503, 200)
    assert gw.dispatcher.run_once("hook", gw.worker) == 12
    assert len(receiver.requests) == 12  # the whole batch went out
    assert gw.dispatcher.breaker("hook").open_until is None
    assert not [r for r in caplog.records if "paused" in r.getMessage()]


def test_rows_past_max_age_go_dead_while_paused_without_another_attempt(gateway, receiver):
    gw = gateway(hook={"max_age": "1s", **SLOW_BACKOFF})
    receiver.default = (503, {}, "down")
    old = [gw.post(f"p{n}") for n in range(breaker.OPEN_AFTER)]
    follower = gw.post("p0", status="resolved")  # waits behind p0's first row
    gw.dispatcher.run_once("hook", gw.worker)
    sink_breaker = gw.dispatcher.breaker("hook")
    assert sink_breaker.open_until is not None
    time.sleep(1.05)  # every row is past max_age
    young = gw.post("fresh")
    sent, expired = len(receiver.requests), metric(gw, "gateway_deliveries_expired_total")
    assert gw.dispatcher.run_once("hook", gw.worker) == 1  # expired the old rows, then probed the young one
    assert len(receiver.requests) == sent + 1 and receiver.requests[-1]["json"]["title"] == "fresh firing"
    for alert_id in (*old, follower):
        detail = gw.delivery(gw.row(alert_id, "hook")["id"])
        assert detail["status"] == "dead", detail
        assert detail["last_error"].startswith("gave up after max_age (1s) while the sink was paused")
        assert detail["last_error"].endswith("answered 503")
        # Not tried again: the attempt log holds the attempts made before the pause, none after.
        assert len(detail["attempt_log"]) == detail["attempts"] == (0 if alert_id == follower else 1)
    assert gw.row(young, "hook")["status"] == "pending" and gw.row(young, "hook")["attempts"] == 1
    assert metric(gw, "gateway_deliveries_expired_total") - expired == breaker.OPEN_AFTER + 1


def test_a_probe_that_finds_no_row_lets_the_next_one_try(gateway, receiver):
    gw = gateway(hook={"max_age": "1s", **SLOW_BACKOFF})
    receiver.default = (503, {}, "down")
    for n in range(breaker.OPEN_AFTER):
        gw.post(f"p{n}")
    gw.dispatcher.run_once("hook", gw.worker)
    sink_breaker = gw.dispatcher.breaker("hook")
    time.sleep(1.05)
    assert gw.dispatcher.run_once("hook", gw.worker) == 0  # the probe's turn: every row expired, none to send
    assert not sink_breaker.probing and sink_breaker.wait() == 0
    receiver.default = (200, {}, "{}")
    fresh = gw.post("fresh")
    assert gw.dispatcher.run_once("hook", gw.worker) == 1  # the next probe goes at once, and is delivered
    assert gw.row(fresh, "hook")["status"] == "delivered" and sink_breaker.open_until is None


def test_threaded_dispatcher_sends_a_trickle_to_a_failing_destination(gateway, receiver):
    """Four senders, 40 problems, a destination answering 503: without the pause each problem's
    first row would be retried after 0.3, 0.6, 1.2 s ... (over 100 POSTs in 1.5 s)."""
    gw = gateway(hook=SLOW_BACKOFF)
    receiver.default = (503, {}, "down")
    alerts = [gw.post(f"p{n}") for n in range(40)]
    gw.dispatcher.start()
    try:
        wait_until(lambda: gw.dispatcher.breaker("hook").open_until is not None, timeout=5, interval=0.02)
        time.sleep(1.5)
        failed = len(receiver.requests)
        # The failures that paused it (a sender or two sending at once), then probes 0.3 and 0.9 s later.
        assert failed <= breaker.OPEN_AFTER + 1 + 4, failed
        receiver.default = (200, {}, "{}")
        wait_until(lambda: all(gw.row(a, "hook")["status"] == "delivered" for a in alerts), timeout=10)
    finally:
        gw.dispatcher.stop()


def test_a_paused_sink_removed_by_a_reload_is_no_longer_shown_paused(gateway, receiver):
    gw = gateway(hook=SLOW_BACKOFF)
    receiver.default = (503, {}, "down")
    for n in range(breaker.OPEN_AFTER):
        gw.post(f"p{n}")
    gw.dispatcher.run_once("hook", gw.worker)
    assert metric(gw, "gateway_sink_paused") == 1
    with open(gw.runtime.config_path, "w", encoding="utf-8") as file:
        file.write(config(other={"url": f"{receiver.url}/other"}))
    assert gw.runtime.reload()
    gw.dispatcher.start()
    try:
        wait_until(lambda: metric(gw, "gateway_sink_paused") == 0, timeout=5, interval=0.02)
    finally:
        gw.dispatcher.stop()
    with open(gw.runtime.config_path, "w", encoding="utf-8") as file:  # and back: the old pause is not resumed
        file.write(config(hook={"url": f"{receiver.url}/hook", **SLOW_BACKOFF}))
    assert gw.runtime.reload()
    assert gw.dispatcher.breaker("hook").open_until is None


def test_a_row_delivered_elsewhere_while_it_expires_stays_delivered(gateway, receiver, database_url, moved_clock):
    """PostgreSQL: one process's paused sink expires its rows past ``max_age`` while a dispatcher
    in another process, its breaker closed, records one of them delivered.  The expiry waits for
    that row, and must then leave it delivered: marked dead, it would be sent again if re-driven.
    The other process's record is played by hand on a connection of its own."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's one writer keeps the two transactions apart")
    gw = gateway(hook={"max_age": "60s"})
    alert_id = gw.post("p0")
    row_id = gw.row(alert_id, "hook")["id"]
    moved_clock.advance(timedelta(minutes=2))  # past max_age
    engine = gw.runtime.engine
    with engine.connect() as elsewhere:
        elsewhere.execute(update(DeliveryRow).where(DeliveryRow.id == row_id)
                          .values(status="delivered", finished_at=moved_clock.now()))
        expiring = threading.Thread(target=run_in_transaction, args=(engine, lambda conn: breaker._expire_batch(
            conn, "hook", 60, "answered 503")))
        expiring.start()
        wait_until(lambda: lock_waits(engine, "deliveries"), timeout=10)  # the expiry waits for the row
        elsewhere.commit()
    expiring.join(timeout=10)
    assert not expiring.is_alive()
    assert gw.row(alert_id, "hook")["status"] == "delivered"
