"""The delivery outbox against a real HTTP receiver, through testkit's ``testhttp`` sink.

Delivery is driven step by step with ``Dispatcher.run_once`` where the point is what
gets recorded, and with the threaded dispatcher where the point is isolation.
"""
from __future__ import annotations

import logging

import itertools
import os
import re
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, update

from gateway.pipeline import outbox
from gateway.pipeline.outbox import Dispatcher
from gateway.store.models import DeliveryRow, utcnow
from testkit.outbox import WORKER, Gateway, at, config, gateway_maker
from testkit.support import TcpProxy, counting_write_commits, wait_until


@pytest.fixture
def gateway(make_app, receiver):
    return gateway_maker(make_app, receiver)


def sent(receiver, path: str = "/hook") -> list[dict]:
    return [r["json"] for r in receiver.requests if r["path"] == path]


def test_every_attempt_is_recorded_with_growing_jittered_backoff_until_dead(gateway, receiver):
    """Delays double from backoff_initial up to backoff_max, each within [d/2, d]; never retried early."""
    gw = gateway(hook={"max_attempts": 5})
    receiver.default = (503, {}, "busy")
    alerts = [gw.post(f"p{n}") for n in range(3)]
    next_at: dict[tuple[int, int], datetime] = {}

    def step_until_dead():
        gw.dispatcher.run_once("hook", WORKER)
        rows = gw.deliveries(sink="hook")
        for row in rows:
            if row["status"] == "pending" and row["attempts"]:
                next_at[row["id"], row["attempts"]] = at(row["next_attempt_at"])
        return all(row["status"] == "dead" for row in rows)

    wait_until(step_until_dead, interval=0.01)
    rows = gw.deliveries(sink="hook")
    assert [row["alert_id"] for row in rows] == alerts
    first_delays = []
    for row in rows:
        detail = gw.delivery(row["id"])
        assert detail["attempts"] == 5 and detail["finished_at"] is not None
        assert detail["last_error"] == "gave up after 5 attempts; last error: answered 503"
        log = detail["attempt_log"]
        assert [a["outcome"] for a in log] == ["retry"] * 4 + ["dead"]
        assert [a["status_code"] for a in log] == [503] * 5
        assert [a["error"] for a in log] == ["answered 503"] * 4 + [detail["last_error"]]
        assert {a["worker"] for a in log} == {WORKER}
        assert all(isinstance(a["duration_ms"], int) and 0 <= a["duration_ms"] < 2000 for a in log)
        for n, attempt in enumerate(log[:-1], start=1):
            ended = at(attempt["started_at"]).timestamp() + attempt["duration_ms"] / 1000
            delay = next_at[row["id"], n].timestamp() - ended
            ceiling = min(0.2, 0.05 * 2 ** (n - 1))
            assert ceiling / 2 - 0.002 <= delay <= ceiling + 0.03, (n, delay)
            assert at(log[n]["started_at"]) >= next_at[row["id"], n]
            if n == 1:
                first_delays.append(delay)
    assert len(set(first_delays)) > 1, "no jitter: every row waited exactly as long"
    by_delivery = Counter(r["delivery"] for r in sent(receiver))
    assert by_delivery == {row["id"]: 5 for row in rows}
    assert [r["attempt"] for r in sent(receiver) if r["delivery"] == rows[0]["id"]] == [1, 2, 3, 4, 5]


def test_permanent_error_is_dead_at_once_with_status_and_body(gateway, receiver):
    gw = gateway()
    receiver.answer((400, {}, '{"error": "unknown field"}'))
    alert = gw.post("p")
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    detail = gw.delivery(gw.row(alert, "hook")["id"])
    error = 'answered 400 | response: {"error": "unknown field"}'
    assert (detail["status"], detail["attempts"], detail["last_error"]) == ("dead", 1, error)
    assert detail["finished_at"] is not None
    assert [(a["outcome"], a["status_code"], a["error"], a["worker"]) for a in detail["attempt_log"]] == [
        ("dead", 400, error, WORKER)]
    assert gw.dispatcher.run_once("hook", WORKER) == 0
    assert len(receiver.requests) == 1


def test_operator_redrives_one_dead_row(gateway, receiver, caplog):
    """Only a dead row can be re-driven; it then gets a fresh attempt budget and its log grows.
    Both the death and the re-drive are logged."""
    caplog.set_level(logging.INFO, logger="gateway.pipeline.outbox")
    gw = gateway()
    receiver.answer((400, {}, "bad"))
    dead = gw.row(gw.post("p"), "hook")["id"]
    delivered = gw.row(gw.post("q"), "hook")["id"]
    assert gw.dispatcher.run_once("hook", WORKER) == 2
    pending = gw.row(gw.post("r"), "hook")["id"]
    for delivery_id, status, code in ((pending, 409, "not_dead"), (999999, 404, "not_found")):
        r = gw.api.post(f"/api/deliveries/{delivery_id}/retry")
        assert (r.status_code, r.json["error"]["code"]) == (status, code), delivery_id
    assert "is pending" in gw.api.post(f"/api/deliveries/{pending}/retry").json["error"]["message"]

    r = gw.api.post(f"/api/deliveries/{dead}/retry")
    assert r.status_code == 200, r.json
    assert (r.json["id"], r.json["status"], r.json["attempts"], r.json["finished_at"]) == (dead, "pending", 0, None)
    assert [m for m in caplog.messages if "dead" in m][0].startswith(f"delivery {dead} to hook is dead: ")
    assert f"re-driven: 1 dead deliveries back in the queue (delivery {dead})" in caplog.messages
    gw.drive("hook", lambda: gw.delivery(dead)["status"] == "delivered")
    detail = gw.delivery(dead)
    assert detail["attempts"] == 1
    assert [(a["outcome"], a["status_code"]) for a in detail["attempt_log"]] == [("dead", 400), ("delivered", None)]
    assert [r["delivery"] for r in sent(receiver)].count(dead) == 2
    for delivery_id in (dead, delivered):
        assert gw.api.post(f"/api/deliveries/{delivery_id}/retry").status_code == 409
    assert [r["delivery"] for r in sent(receiver)].count(delivered) == 1


def test_a_dead_alert_stays_dead_once_a_later_state_of_its_problem_was_delivered(gateway, receiver):
    """Re-sending an ALERT after its RECOVERY reached the sink would bring back an ended problem."""
    gw = gateway()
    receiver.answer((400, {}, "bad"), (400, {}, "bad"), (400, {}, "bad"))
    fired, other, twice = (gw.row(gw.post(p), "hook")["id"] for p in ("p", "q", "r"))
    again = gw.row(gw.post("r"), "hook")["id"]  # waits: the earlier "r" row is still pending
    assert gw.dispatcher.run_once("hook", WORKER) == 3
    recovered = gw.row(gw.post("p", "resolved"), "hook")["id"]
    gw.drive("hook", lambda: gw.delivery(recovered)["status"] == "delivered")
    assert [gw.delivery(i)["status"] for i in (fired, other, twice, again)] == ["dead", "dead", "dead", "delivered"]

    r = gw.api.post(f"/api/deliveries/{fired}/retry")
    assert (r.status_code, r.json["error"]["code"]) == (409, "superseded")
    assert f"delivery {recovered}, of a later alert" in r.json["error"]["message"]
    r = gw.api.post("/api/deliveries/retry", json={"sink": "hook"})
    assert (r.status_code, r.json) == (200, {"sink": "hook", "requeued": 1, "superseded": [fired, twice]})
    gw.drive("hook", lambda: gw.delivery(other)["status"] == "delivered")
    assert [gw.delivery(i)["status"] for i in (fired, twice)] == ["dead", "dead"]
    assert [r["delivery"] for r in sent(receiver)] == [fired, other, twice, again, recovered, other]


def test_list_filters_by_status_and_sink(gateway, receiver):
    gw = gateway(hook={}, other={})
    ok, bad, busy = (gw.post(p) for p in ("ok", "bad", "busy"))
    receiver.answer(200, (400, {}, "no"), 503)
    assert gw.dispatcher.run_once("hook", WORKER) == 3

    def listed(**query):
        return [(row["alert_id"], row["sink"], row["status"]) for row in gw.deliveries(**query)]

    assert listed(sink="hook") == [(ok, "hook", "delivered"), (bad, "hook", "dead"), (busy, "hook", "pending")]
    assert listed(status="pending", sink="hook") == [(busy, "hook", "pending")]
    assert listed(status="pending") == [(ok, "other", "pending"), (bad, "other", "pending"),
                                        (busy, "hook", "pending"), (busy, "other", "pending")]
    assert listed(status="dead") == [(bad, "hook", "dead")]
    assert listed(status="delivered", sink="other") == []
    r = gw.api.get("/api/deliveries", query_string={"status": "lost"})
    assert r.status_code == 422 and "status" in r.json["error"]["fields"]
    page = gw.api.get("/api/deliveries", query_string={"sink": "other", "per_page": 2}).json
    assert (page["total"], len(page["items"])) == (3, 2)


def test_bulk_retry_requeues_only_that_sinks_dead_rows(gateway, receiver):
    gw = gateway(hook={}, other={})
    receiver.default = (400, {}, "no")
    alerts = [gw.post("p"), gw.post("q")]
    for sink in ("hook", "other"):
        assert gw.dispatcher.run_once(sink, WORKER) == 2
    assert len(gw.deliveries(status="dead")) == 4

    r = gw.api.post("/api/deliveries/retry", json={"sink": "hook"})
    assert (r.status_code, r.json) == (200, {"sink": "hook", "requeued": 2, "superseded": []})
    receiver.default = (200, {}, "{}")
    gw.drive("hook", lambda: len(gw.deliveries(status="delivered")) == 2)
    assert [(row["alert_id"], row["sink"]) for row in gw.deliveries(status="delivered")] == [
        (alerts[0], "hook"), (alerts[1], "hook")]
    assert [row["sink"] for row in gw.deliveries(status="dead")] == ["other", "other"]
    assert gw.dispatcher.run_once("other", WORKER) == 0
    assert gw.api.post("/api/deliveries/retry", json={}).status_code == 422


@pytest.fixture
def broken(receiver):
    """A second receiver, for a sink that fails while ``receiver`` stays healthy."""
    server = type(receiver)()
    yield server
    server.down()


@pytest.mark.parametrize("failure", ["always 503", "connection refused", "timeout"])
def test_failing_sink_never_delays_or_resends_to_a_healthy_one(gateway, receiver, broken, failure):
    if failure == "always 503":
        broken.default = (503, {}, "down")
    elif failure == "connection refused":
        broken.down()
    else:
        broken.delay = 3
    gw = gateway(hook={}, broken={"url": f"{broken.url}/broken", "timeout": 0.25, "max_attempts": 100})
    gw.dispatcher.start()
    try:
        alerts, accepted = [], []
        for n in range(5):
            alerts.append(gw.post(f"p{n}"))
            accepted.append(datetime.now(timezone.utc))
        wait_until(lambda: len(sent(receiver)) == 5, timeout=5)
        # Let the broken sink fail and retry for a while before counting what the healthy one got.
        wait_until(lambda: min(row["attempts"] for row in gw.deliveries(sink="broken")) >= 2, timeout=10)
    finally:
        gw.dispatcher.stop()
    rows = gw.deliveries(sink="hook")
    assert [(row["alert_id"], row["status"], row["attempts"]) for row in rows] == [(a, "delivered", 1) for a in alerts]
    assert sorted(r["delivery"] for r in sent(receiver)) == [row["id"] for row in rows]
    # From when the webhook was answered, not the row's created_at: a request that stalls before
    # its commit (a slow fsync on a busy machine) is ingest's time, not a wait behind the broken sink.
    assert all((at(row["finished_at"]) - t).total_seconds() < 1 for row, t in zip(rows, accepted))
    assert {row["status"] for row in gw.deliveries(sink="broken")} == {"pending"}


def test_rows_of_a_crashed_worker_are_taken_up_after_the_lease(gateway, receiver):
    gw = gateway(lease=60)
    alerts = [gw.post("p"), gw.post("q")]
    assert len(gw.dispatcher.claim("hook", "dead-worker")) == 2
    assert gw.dispatcher.run_once("hook", "live-worker") == 0  # the lease still holds
    assert receiver.requests == []
    # The lease runs out (ended by hand: a real one short enough to wait for would also run out
    # under a machine that stalls between the claim and the look above).
    with gw.runtime.engine.begin() as conn:
        conn.execute(update(DeliveryRow).where(DeliveryRow.claimed_by == "dead-worker")
                     .values(claimed_until=utcnow() - timedelta(minutes=1)))
    gw.drive("hook", lambda: len(gw.deliveries(status="delivered")) == 2, worker="live-worker")
    rows = gw.deliveries(sink="hook")
    assert [row["alert_id"] for row in rows] == alerts
    assert Counter(r["delivery"] for r in sent(receiver)) == {row["id"]: 1 for row in rows}
    for row in rows:
        detail = gw.delivery(row["id"])
        assert detail["attempts"] == 2  # the dead worker's claim counted one: it may have sent the row
        assert [(a["outcome"], a["worker"]) for a in detail["attempt_log"]] == [("delivered", "live-worker")]


def test_a_batch_slower_than_its_lease_keeps_its_claim(gateway, receiver):
    """The claim is renewed while the batch is worked through: nobody else takes or sends its rows."""
    # A lease of 2 s, renewed every 0.5 s: a renewal may stall up to ~1 s before the delivery in
    # flight is cut.  Five sends of 0.7 s outlast it.
    gw = gateway(lease=2)
    receiver.delay = 0.7
    rows = [gw.row(gw.post(f"p{n}"), "hook")["id"] for n in range(5)]
    slow = threading.Thread(target=gw.dispatcher.run_once, args=("hook", "slow-worker"))
    slow.start()
    wait_until(lambda: len(receiver.requests) >= 5)  # 2.8 s on: past the slow worker's original lease
    assert Dispatcher(gw.runtime, lease=2).run_once("hook", "fast-worker") == 0
    slow.join()
    assert Counter(r["delivery"] for r in sent(receiver)) == {row: 1 for row in rows}
    assert {a["worker"] for row in rows for a in gw.delivery(row)["attempt_log"]} == {"slow-worker"}


def test_stopping_finishes_the_delivery_in_flight_and_hands_back_the_rest(gateway, receiver):
    gw = gateway(lease=30, hook={"timeout": 10})
    receiver.delay = 2  # the stop comes while the first delivery is in flight, however slow the machine
    rows = [gw.row(gw.post(f"p{n}"), "hook")["id"] for n in range(3)]
    gw.dispatcher.start()
    wait_until(lambda: receiver.requests)
    gw.dispatcher.stop()
    receiver.delay = 0
    assert [(row["id"], row["status"], row["attempts"]) for row in gw.deliveries(sink="hook")] == [
        (rows[0], "delivered", 1), (rows[1], "pending", 0), (rows[2], "pending", 0)]
    # Not held for the 30 s lease: another worker takes them at once.
    assert Dispatcher(gw.runtime, lease=30).run_once("hook", "next-worker") == 2
    assert Counter(r["delivery"] for r in sent(receiver)) == {row: 1 for row in rows}


@pytest.mark.parametrize("script, alert_final, seen", [
    ([503, 200, 503], "delivered",
     [("p firing", 503), ("q firing", 200), ("p firing", 503), ("p firing", 200), ("p resolved", 200)]),
    ([(400, {}, "no")], "dead", [("p firing", 400), ("q firing", 200), ("p resolved", 200)]),
], ids=["alert retried", "alert dead"])
def test_recovery_waits_for_its_alert_without_blocking_other_fingerprints(gateway, receiver, script, alert_final,
                                                                         seen):
    gw = gateway()
    receiver.answer(*script)
    alert, other, recovery = gw.post("p"), gw.post("q"), gw.post("p", "resolved")
    assert gw.dispatcher.run_once("hook", WORKER) == 2  # the alert fails, q goes through, the recovery waits
    assert gw.row(other, "hook")["status"] == "delivered"
    assert (gw.row(recovery, "hook")["status"], gw.row(recovery, "hook")["attempts"]) == ("pending", 0)

    gw.drive("hook", lambda: gw.row(recovery, "hook")["status"] != "pending")
    assert (gw.row(alert, "hook")["status"], gw.row(recovery, "hook")["status"]) == (alert_final, "delivered")
    assert [(r["json"]["title"], r["status"]) for r in receiver.requests] == seen


def _samples(client) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.get_data(as_text=True)) for s in family.samples}


def test_metrics_show_outbox_depth_and_attempt_outcomes(gateway, receiver):
    gw = gateway(hook={}, other={})
    before = _samples(gw.client)
    for problem in ("ok", "bad", "busy", "idle"):
        gw.post(problem)
    receiver.answer(200, (400, {}, "no"), 503, 200)
    assert gw.dispatcher.run_once("hook", WORKER) == 4
    after = _samples(gw.client)

    def rows(sink, status):
        return after.get(("gateway_outbox_rows", (("sink", sink), ("status", status))))

    assert (rows("hook", "pending"), rows("hook", "dead"), rows("other", "pending"), rows("other", "dead")) == (
        1, 1, 4, 0)
    assert rows("hook", "delivered") is None and rows("itms", "pending") is None  # inline sinks have no outbox

    def attempts(samples, outcome):
        return samples.get(("gateway_delivery_attempts_total", (("outcome", outcome), ("sink", "hook"))), 0)

    assert {o: attempts(after, o) - attempts(before, o) for o in ("delivered", "retry", "dead")} == {
        "delivered": 2, "retry": 1, "dead": 1}


@contextmanager
def database_down(engine, proxy: TcpProxy | None):
    """Make ``engine``'s database unreachable: PostgreSQL's TCP hop goes down (for good); a
    SQLite file is moved away for the while (a new connection then finds no tables)."""
    if proxy is not None:
        proxy.down()
        engine.dispose()
        yield
        return
    path = engine.url.database
    os.rename(path, f"{path}.away")
    engine.dispose()
    try:
        yield
    finally:
        engine.dispose()
        os.replace(f"{path}.away", path)


def test_metrics_show_each_sinks_backlog_and_keep_it_while_the_database_is_down(make_app, receiver, database_url):
    proxy = None
    overrides = {}
    if database_url.startswith("postgresql"):
        target = urlsplit(database_url.replace("postgresql+psycopg", "postgresql"))
        proxy = TcpProxy(target.hostname, target.port or 5432)
        overrides["DATABASE_URL"] = database_url.replace(f"@{target.netloc.split('@')[1]}",
                                                         f"@127.0.0.1:{proxy.port}")
    gw = Gateway(make_app(config(hook={"url": f"{receiver.url}/hook"}, other={"url": f"{receiver.url}/other"}),
                          **overrides), 5.0)
    gw.post("p")
    receiver.answer((400, {}, "no"))
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    gw.post("q")
    time.sleep(0.2)

    def figures():
        samples = _samples(gw.client)
        return {key: samples.get(key) for key in [
            ("gateway_outbox_rows", (("sink", "hook"), ("status", "pending"))),
            ("gateway_outbox_rows", (("sink", "hook"), ("status", "dead"))),
            ("gateway_outbox_rows", (("sink", "other"), ("status", "pending"))),
            ("gateway_outbox_stats_stale", ()),
            ("gateway_outbox_stats_read_timestamp_seconds", ())]}, {
            sink: samples.get(("gateway_outbox_oldest_pending_age_seconds", (("sink", sink),))) for sink in (
                "hook", "other")}

    (up, up_ages) = figures()
    assert list(up.values())[:4] == [1, 1, 2, 0]
    assert up_ages["other"] >= 0.2 and 0 <= up_ages["hook"] < up_ages["other"]  # q is younger than p
    try:
        with database_down(gw.runtime.engine, proxy):
            time.sleep(0.2)
            (stale, stale_ages) = figures()
    finally:
        if proxy:
            proxy.down()
    assert list(stale.values()) == [1, 1, 2, 1, up[("gateway_outbox_stats_read_timestamp_seconds", ())]]
    assert stale_ages["other"] >= up_ages["other"] + 0.2, "the age stood still while the database was down"


def test_a_wake_up_while_a_dispatcher_looks_is_not_lost(app):
    """A dispatcher that found nothing must not sleep through rows queued while it looked."""
    runtime = app.extensions["gateway"].runtime
    seen = runtime.wakeups.generation  # read before looking, as the dispatcher does
    runtime.notify_deliveries()  # ...rows queued meanwhile
    # A daemon: should the wake-up be lost, pytest must not wait out the 30 s after the failure.
    waited = threading.Thread(target=runtime.wakeups.wait_for_deliveries, args=(30, seen), daemon=True)
    waited.start()
    waited.join(5)
    assert not waited.is_alive()


# -- retries by age (issue 11, item 2) ------------------------------------------------------

def test_an_outage_outlasting_any_attempt_count_loses_nothing_and_keeps_the_order(gateway, receiver):
    """With the defaults a row is retried for 24 h, however many attempts that takes: once the
    sink is back it gets every alert, each recovery after its alert."""
    gw = gateway()
    receiver.default = (503, {}, "down")
    fired, other, recovered = gw.post("p"), gw.post("q"), gw.post("p", "resolved")
    gw.drive("hook", lambda: min(gw.row(fired, "hook")["attempts"], gw.row(other, "hook")["attempts"]) >= 10)
    assert {row["status"] for row in gw.deliveries(sink="hook")} == {"pending"}
    receiver.default = (200, {}, "{}")
    gw.drive("hook", lambda: len(gw.deliveries(status="delivered", sink="hook")) == 3)
    delivered = [(r["json"]["title"]) for r in receiver.requests if r["status"] == 200]
    assert sorted(delivered) == ["p firing", "p resolved", "q firing"]
    assert delivered.index("p firing") < delivered.index("p resolved")
    assert gw.row(recovered, "hook")["attempts"] == 1 and gw.row(other, "hook")["attempts"] >= 11


def test_a_row_goes_dead_once_retried_for_max_age(gateway, receiver):
    gw = gateway(hook={"max_age": "300ms"})
    receiver.default = (503, {}, "down")
    alert = gw.post("p")
    gw.drive("hook", lambda: gw.row(alert, "hook")["status"] == "dead")
    detail = gw.delivery(gw.row(alert, "hook")["id"])
    assert detail["last_error"].startswith("gave up after ") and "(max_age 0.3s)" in detail["last_error"]
    assert detail["last_error"].endswith("last error: answered 503")
    log = detail["attempt_log"]
    assert [a["outcome"] for a in log] == ["retry"] * (detail["attempts"] - 1) + ["dead"]
    # The rule, from the recorded times: an attempt that ends while the row is younger than max_age
    # is a retry, the first to end older is dead. A loaded machine may start the first one late.
    ages = [(at(a["started_at"]) - at(detail["created_at"])).total_seconds() + a["duration_ms"] / 1000
            for a in log]
    assert all(age < 0.3 + 0.002 for age in ages[:-1]) and ages[-1] >= 0.3 - 0.002
    if ages[0] < 0.2:  # tried well inside max_age, so it must have been retried
        assert detail["attempts"] >= 2


def test_max_attempts_is_an_opt_in_limit(gateway, receiver):
    gw = gateway(hook={"max_attempts": 2})
    receiver.default = (503, {}, "down")
    alert = gw.post("p")
    gw.drive("hook", lambda: gw.row(alert, "hook")["status"] == "dead")
    assert gw.delivery(gw.row(alert, "hook")["id"])["last_error"] == "gave up after 2 attempts; last error: answered 503"


def test_a_redriven_row_gets_a_fresh_max_age(gateway, receiver, moved_clock):
    gw = gateway(hook={"max_age": "1m"})
    receiver.default = (503, {}, "down")
    row = gw.row(gw.post("p"), "hook")["id"]
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    # Past its max_age without waiting a minute; the clock stays there, so the re-drive's next
    # attempt is a minute after the row's creation and seconds after its re-drive.
    moved_clock.advance(timedelta(seconds=61))
    gw.drive("hook", lambda: gw.delivery(row)["status"] == "dead")
    r = gw.api.post(f"/api/deliveries/{row}/retry")
    assert r.status_code == 200 and r.json["requeued_at"] is not None
    assert at(r.json["requeued_at"]) > at(r.json["created_at"])
    tried = r.json["attempts"]
    gw.drive("hook", lambda: gw.delivery(row)["attempts"] > tried, timeout=5)
    assert gw.delivery(row)["status"] == "pending", "a re-driven row died at its first failure: max_age ran from creation"


def test_a_superseded_dead_row_shows_it_was_never_delivered_and_why(gateway, receiver):
    gw = gateway()
    receiver.answer((400, {}, "bad"))
    fired = gw.row(gw.post("p"), "hook")["id"]
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    assert gw.delivery(fired)["superseded_by"] is None  # dead, but nothing newer reached the sink yet
    recovered = gw.row(gw.post("p", "resolved"), "hook")["id"]
    gw.drive("hook", lambda: gw.delivery(recovered)["status"] == "delivered")
    (listed,) = [row for row in gw.deliveries(status="dead") if row["id"] == fired]
    assert (listed["status"], listed["superseded_by"], listed["last_error"]) == (
        "dead", recovered, "answered 400 | response: bad")
    assert gw.delivery(fired)["superseded_by"] == recovered
    assert gw.delivery(recovered)["superseded_by"] is None


def test_a_sink_back_from_an_outage_gets_its_backlog_at_once(gateway, receiver):
    """Rows waiting out a long backoff are due as soon as the sink takes a delivery again."""
    gw = gateway(hook={"backoff_initial": "1m", "backoff_max": "5m"})
    receiver.default = (503, {}, "down")
    waiting = [gw.post(f"p{n}") for n in range(3)]
    assert gw.dispatcher.run_once("hook", WORKER) == 3
    assert gw.dispatcher.run_once("hook", WORKER) == 0  # all waiting out 30-60 s
    receiver.default = (200, {}, "{}")
    fresh = gw.post("q")
    assert gw.dispatcher.run_once("hook", WORKER) == 1  # the new row goes through: the sink is back
    gw.drive("hook", lambda: len(gw.deliveries(status="delivered")) == 4, timeout=3)
    assert [r["json"]["title"] for r in receiver.requests if r["status"] == 200] == [
        "q firing", *(f"p{n} firing" for n in range(3))]
    assert gw.row(fresh, "hook")["attempts"] == 1 and all(gw.row(a, "hook")["attempts"] == 2 for a in waiting)


# -- throughput (issue 16): commits per batch, senders per sink ------------------------------

def test_a_batch_writes_its_attempts_and_outcomes_in_one_transaction_each(gateway, receiver):
    """The claim (which counts the attempts) and the outcomes: two commits for a batch of five, not one
    per delivery twice over (on SQLite each commit is a sync of the WAL under the one writer lock: two
    per delivery capped a sink at a few hundred a second)."""
    gw = gateway()
    receiver.answer(200, (400, {}, "no"), 200, 200, 503)
    rows = [gw.row(gw.post(f"p{n}"), "hook")["id"] for n in range(5)]
    with counting_write_commits(gw.runtime.engine) as commits:
        assert gw.dispatcher.run_once("hook", WORKER) == 5
    assert len(commits) == 2
    assert [(gw.delivery(i)["status"], gw.delivery(i)["attempts"]) for i in rows] == [
        ("delivered", 1), ("dead", 1), ("delivered", 1), ("delivered", 1), ("pending", 1)]
    assert [len(gw.delivery(i)["attempt_log"]) for i in rows] == [1] * 5


def test_outcomes_are_written_as_they_come_once_the_record_interval_has_passed(gateway, receiver, monkeypatch):
    """A slow destination's outcomes are not held back for the rest of its batch."""
    monkeypatch.setattr(outbox, "RECORD_INTERVAL", 0.0)
    gw = gateway()
    for n in range(3):
        gw.post(f"p{n}")
    with counting_write_commits(gw.runtime.engine) as commits:
        assert gw.dispatcher.run_once("hook", WORKER) == 3
    assert len(commits) == 1 + 3


def test_a_sinks_senders_overlap_a_slow_destination_and_keep_each_problems_order(gateway, receiver):
    """Each of a sink's senders claims batches of its own: deliveries overlap, and still no problem's
    row goes out before the row queued before it."""
    gw = gateway()
    receiver.delay = 0.05
    posted = [gw.row(gw.post(problem, status), "hook")["id"] for problem, status in itertools.product(
        ("p", "q", "r", "s"), ("firing", "resolved", "firing"))]
    dispatcher = Dispatcher(gw.runtime, batch=1, senders=4)
    dispatcher.start()
    try:
        wait_until(lambda: len(gw.deliveries(status="delivered", sink="hook")) == len(posted))
    finally:
        dispatcher.stop()
    spans = sorted((at(a["started_at"]).timestamp(), at(a["started_at"]).timestamp() + a["duration_ms"] / 1000)
                   for i in posted for a in gw.delivery(i)["attempt_log"])
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), "no two deliveries overlapped"
    arrived = [r["delivery"] for r in sent(receiver)]
    assert sorted(arrived) == posted
    for problem in range(4):
        mine = posted[problem * 3:problem * 3 + 3]
        assert [i for i in arrived if i in mine] == mine


# -- rows blocked behind an earlier row of their problem (gateway.pipeline.ordering) --------------

def blocked_rows(gw: Gateway, sink: str = "hook") -> list[int]:
    from sqlalchemy import select

    from gateway.store.models import DeliveryRow

    with gw.runtime.engine.connect() as conn:
        return list(conn.execute(select(DeliveryRow.id).where(DeliveryRow.sink_name == sink, DeliveryRow.blocked)
                                 .order_by(DeliveryRow.id)).scalars())


def test_rows_behind_an_earlier_row_of_their_problem_are_blocked_and_move_on_one_by_one(gateway, receiver):
    """Behind an outage, a problem's later rows are marked blocked, so the claim passes them by;
    once the destination is back, each delivery unblocks the next row of its problem, and every
    row goes out in its problem's order (a chain left blocked would never be claimed)."""
    gw = gateway()
    receiver.default = (503, {}, "down")
    posted = {problem: [gw.row(gw.post(problem, status), "hook")["id"] for status in ("firing", "resolved") * 2]
              for problem in ("p", "q", "r")}
    assert gw.dispatcher.run_once("hook", WORKER) == 3  # each problem's first row, which fails
    assert gw.dispatcher.block_waiting("hook") == 9
    assert blocked_rows(gw) == sorted(i for rows in posted.values() for i in rows[1:])
    assert gw.dispatcher.block_waiting("hook") == 0  # nothing left to mark

    receiver.default = (200, {}, "{}")
    gw.drive("hook", lambda: len(gw.deliveries(status="delivered", sink="hook")) == 12)
    delivered = [r["json"]["delivery"] for r in receiver.requests if r["status"] == 200]
    for rows in posted.values():
        assert [i for i in delivered if i in rows] == rows
    assert sorted(delivered) == sorted(i for rows in posted.values() for i in rows) and blocked_rows(gw) == []


def test_a_blocking_pass_on_sqlite_sends_the_same_statements_whatever_it_marks(gateway, receiver, database_url):
    """Each statement text SQLite sees is one it prepares and the sqlite3 module keeps (128 a
    connection): a pass that named its rows by id sent a text of each length, up to 2,000 ids,
    and held 20 MiB of SQLite's memory behind an outage (ordering._BLOCK_WAITING_SQLITE)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's pass locks the rows it waits for, by id; its statements are prepared in the server")
    gw = gateway()
    receiver.default = (503, {}, "down")
    engine = gw.runtime.engine
    traced: list[str] = []
    engine.dispose()  # the connections from here on trace what they run

    def trace(dbapi_connection, _record):
        dbapi_connection.set_trace_callback(traced.append)

    event.listen(engine, "connect", trace)
    try:
        def a_pass(problems: str) -> set[str]:
            for problem in problems:
                gw.post(problem)
                gw.post(problem, "resolved")
            traced.clear()
            marked = gw.dispatcher.block_waiting("hook")
            assert marked == len(problems)  # each problem's recovery, behind its alert
            # The text without its values (the trace expands them): what is prepared.
            return {re.sub(r"\b\d+\b", "?", re.sub(r"'[^']*'", "?", sql)) for sql in traced}

        assert a_pass("pq") == a_pass("rstuvw")
    finally:
        event.remove(engine, "connect", trace)


def test_a_dead_row_unblocks_the_next_row_of_its_problem(gateway, receiver):
    gw = gateway()
    receiver.answer((400, {}, "no"))
    alert, recovery = gw.post("p"), gw.post("p", "resolved")
    assert gw.dispatcher.block_waiting("hook") == 1  # the recovery waits behind its alert, which is due
    assert blocked_rows(gw) == [gw.row(recovery, "hook")["id"]]
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    assert gw.row(alert, "hook")["status"] == "dead" and blocked_rows(gw) == []
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    assert gw.row(recovery, "hook")["status"] == "delivered"


def test_a_row_whose_predecessor_is_ending_is_not_blocked(gateway, receiver, database_url):
    """The pass marks a row only behind a row it could lock as still pending: while a dispatcher
    is recording the predecessor's delivery (its row locked, not yet committed) the pass leaves
    the row alone, so the unblocking that follows the commit cannot miss a mark made meanwhile."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's; SQLite's one writer runs the two one after the other")
    from sqlalchemy import text

    gw = gateway()
    alert, recovery = gw.post("p"), gw.post("p", "resolved")
    with gw.runtime.engine.connect() as ending:
        ending.execute(text("UPDATE deliveries SET status = 'delivered' WHERE id = :id"),
                       {"id": gw.row(alert, "hook")["id"]})
        assert gw.dispatcher.block_waiting("hook") == 0
        ending.commit()
    assert blocked_rows(gw) == []
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    assert gw.row(recovery, "hook")["status"] == "delivered"


def test_a_redriven_row_is_queued_unblocked(gateway, receiver):
    """A row can end still marked blocked: marked while its delivery was in flight, because an
    older row of its problem was re-driven meanwhile.  Re-driven in its turn, it may have nothing
    ahead of it; left marked it would never be claimed again."""
    from sqlalchemy import update

    from gateway.store.models import DeliveryRow

    gw = gateway()
    receiver.answer((400, {}, "bad"))
    dead = gw.row(gw.post("p"), "hook")["id"]
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    with gw.runtime.engine.begin() as conn:  # the mark the in-flight delivery ended with
        conn.execute(update(DeliveryRow).where(DeliveryRow.id == dead).values(blocked=True))
    assert gw.api.post(f"/api/deliveries/{dead}/retry").status_code == 200
    assert blocked_rows(gw) == []
    assert gw.dispatcher.run_once("hook", WORKER) == 1
    assert gw.delivery(dead)["status"] == "delivered"
