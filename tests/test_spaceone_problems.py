"""Issue 12: what reaches SpaceONE opens and closes one alert per problem.

The stand-in (``testkit.spaceone``) applies SpaceONE's own rule: an event joins an alert
only through an event of its key created in the last 600 s.  The gateway's clock and the
stand-in's are one (``gateway.clock``), so hours pass in a test without sleeping: each
``wait`` moves the clock a minute (or ``step``) at a time and lets the dispatcher send what is due.
"""
from __future__ import annotations

import itertools
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway import clock
from gateway.fingerprints import namespaced_fingerprint
from gateway.pipeline import problems
from gateway.store.models import AlertRow
from testkit import metric
from testkit.spaceone import SpaceoneStandIn
from testkit.support import OutboxDriver, lock_waits, wait_until

WORKER = "problems-worker"
OCI_PAYLOADS = Path(__file__).resolve().parents[1] / "plugins" / "oci" / "gateway_oci" / "samples"


def config(url: str, **options) -> str:
    sink = {"url": url, "timeout": 2, "backoff_initial": 60, "backoff_max": 60, **options}
    return "\n".join([
        "sources:", "  - key: src", "    type: testsrc", "  - key: oci-seoul", "    type: oci",
        "sinks:", "  - name: itms", "    type: itms", "  - name: spaceone", "    type: spaceone",
        *(f"    {key}: {json.dumps(value)}" for key, value in sink.items()),
        "route:", "  sinks: [itms, spaceone]",
    ]) + "\n"


class World(OutboxDriver):
    """The gateway (testsrc in, itms and the spaceone sink out) and the SpaceONE stand-in."""

    ids = itertools.count(1)

    def __init__(self, app, spaceone: SpaceoneStandIn):
        super().__init__(app, WORKER)
        self.spaceone = spaceone

    def post(self, problem: str, status: str = "firing", at=None, group=None, settle: bool = True) -> list[int]:
        """A webhook about ``problem`` (of ``group``) that happened ``at`` (default: now); then deliver what is due."""
        body = {"id": f"{problem}-{next(self.ids)}", "title": f"{problem} failing", "problem": problem,
                "status": status, "severity": "critical", "at": (at or clock.now()).isoformat(),
                **({"group": group} if group else {})}
        r = self.client.post("/hooks/testsrc/src/", json=body)
        assert r.status_code == 202, r.json
        if settle:
            self.settle()
        return r.json["alerts"]

    def oci(self, payload: str, at: datetime, streams: slice = slice(None)) -> list[int]:
        """Oracle's grouped example ``payload`` with the metric ``streams`` kept, evaluated ``at``."""
        message = json.loads((OCI_PAYLOADS / payload).read_text())
        meta = message["alarmMetaData"][0]
        meta["dimensions"], meta["metricValues"] = meta["dimensions"][streams], meta["metricValues"][streams]
        message.update(timestamp=at.isoformat(), timestampEpochMillis=int(at.timestamp() * 1000))
        r = self.client.post("/hooks/oci/oci-seoul/", json=message, headers={"X-OCI-NS-MessageId": f"m-{next(self.ids)}"})
        assert r.status_code == 202, r.json
        self.settle()
        return r.json["alerts"]

    def settle(self) -> None:
        while self.dispatcher.run_once("spaceone", WORKER):
            pass

    def wait(self, minutes: int, step: int = 1) -> None:
        for _ in range(minutes // step):
            clock.advance(timedelta(minutes=step))
            self.settle()

    def sent(self) -> list[tuple[str, str]]:
        """(event_type, event_key) of every request SpaceONE received."""
        return [(r["json"]["event_type"], r["json"]["event_key"]) for r in self.spaceone.requests]

    def assert_agrees(self) -> None:
        """No SpaceONE alert is open whose problem is closed in the gateway, each open problem has
        exactly one open SpaceONE alert, and SpaceONE could parse every event it was sent."""
        incidents = self.api.get("/api/incidents", query_string={"per_page": 500}).json["items"]
        open_problems = sorted(i["fingerprint"] for i in incidents if i["status"] in ("triggered", "acknowledged"))
        assert sorted(a.event_key.rsplit("-", 1)[0] for a in self.spaceone.open_alerts()) == open_problems
        assert not [a for a in self.spaceone.alerts if a.state == "ERROR"]


def key(problem: str, period: int, group=None) -> str:
    return f"{namespaced_fingerprint('src', problem, group)}-{period}"


@pytest.fixture
def spaceone():
    server = SpaceoneStandIn()
    yield server
    server.stop()


@pytest.fixture
def world(make_app, spaceone, moved_clock):
    """world(**spaceone_sink_options); the clock goes back to wall time after the test (``moved_clock``)."""

    def make(**options) -> World:
        return World(make_app(config(spaceone.url, **options)), spaceone)

    return make


@pytest.mark.parametrize("refresh_interval, states", [("5m", ["RESOLVED"]), (0, ["TRIGGERED"])])
def test_a_problem_open_for_30_minutes_is_closed(world, refresh_interval, states):
    """Without refreshes (the second case) the RECOVERY finds no event of its key in the last
    600 s and SpaceONE skips it: the stand-in really applies the rule."""
    w = world(refresh_interval=refresh_interval)
    w.post("disk")
    w.wait(30)
    w.post("disk", "resolved")
    assert [a.state for a in w.spaceone.alerts] == states
    if refresh_interval:
        assert w.sent() == [("ALERT", key("disk", 1))] * 7 + [("RECOVERY", key("disk", 1))]
        assert {row["status"] for row in w.deliveries(sink="spaceone")} == {"delivered"}
        assert [(row["period"], row["refresh"], row["member_fingerprint"]) for row in w.deliveries(sink="spaceone")] == [
            (1, False, None)] + [(1, True, None)] * 6 + [(1, False, None)]
        w.wait(20)
        assert len(w.spaceone.requests) == 8  # a RECOVERY ends the refreshing
        w.assert_agrees()


def test_one_batch_queues_refreshes_only_for_its_problems_open_with_nothing_queued_after(world):
    """The outcomes of a batch are written together: each problem's refresh is decided on its own."""
    w = world(refresh_interval="5m")
    (a,), (b,), (b_again,), (c,), _, _ = (
        w.post(problem, status, settle=False) for problem, status in
        [("a", "firing"), ("b", "firing"), ("b", "firing"), ("c", "firing"), ("d", "firing"), ("d", "resolved")])
    assert w.dispatcher.run_once("spaceone", WORKER) == 4  # one row per problem: a, b, c and d's firing
    # b and d have a row queued after theirs (b's repeat, d's recovery): neither is refreshed now.
    assert sorted(row["alert_id"] for row in w.deliveries(sink="spaceone") if row["refresh"]) == [a, c]
    w.settle()  # b's repeat, d's recovery; b's repeat is refreshed in its turn
    assert sorted(row["alert_id"] for row in w.deliveries(sink="spaceone") if row["refresh"]) == sorted([a, b_again, c])
    assert w.sent()[4:] == [("ALERT", key("b", 1)), ("RECOVERY", key("d", 1))]
    w.assert_agrees()


def test_hourly_repeats_keep_one_alert_and_refreshes_are_counted(world):
    w = world()
    counted = metric(w.client.get("/metrics").text, "gateway_refresh_attempts_total",
                     sink="spaceone", outcome="delivered")
    for _ in range(4):  # OCI repeats a firing alarm hourly
        w.post("cpu")
        w.wait(60, step=5)
    w.post("cpu", "resolved")
    ((alert),) = w.spaceone.alerts
    assert (alert.event_key, alert.state) == (key("cpu", 1), "RESOLVED")
    refreshes = len(w.spaceone.requests) - 5  # four firings and the recovery came from the webhook
    assert refreshes == 4 * 12
    assert metric(w.client.get("/metrics").text, "gateway_refresh_attempts_total",
                  sink="spaceone", outcome="delivered") - counted == refreshes
    w.assert_agrees()


def test_a_refresh_waiting_for_its_time_is_not_outbox_backlog(world):
    """``/metrics`` counts a queued refresh as pending only once it is due (``deliveries.scheduled``):
    every open problem has one waiting, which is not a stall."""
    w = world(refresh_interval="5m")
    w.post("cpu")
    assert [(row["refresh"], row["status"]) for row in w.deliveries(sink="spaceone")] == [
        (False, "delivered"), (True, "pending")]

    def pending() -> float:
        return metric(w.client.get("/metrics").text, "gateway_outbox_rows", sink="spaceone", status="pending")

    assert pending() == 0
    clock.advance(timedelta(minutes=5))  # due now, and not sent yet
    assert pending() == 1


def test_a_stale_firing_is_stored_but_opens_nothing(world):
    w = world()
    t0 = clock.now()
    w.post("disk", at=t0)
    w.wait(2)
    w.post("disk", "resolved")
    (late,) = w.post("disk", at=t0 + timedelta(minutes=1))  # redelivered: it happened before the recovery
    assert late not in {row["alert_id"] for row in w.deliveries(sink="spaceone")}
    (incident,) = w.api.get("/api/incidents").json["items"]
    assert late in {entry["alert_id"] for entry in w.api.get(f"/api/incidents/{incident['id']}").json["timeline"]}
    w.wait(15)
    assert [a.state for a in w.spaceone.alerts] == ["RESOLVED"]
    assert w.sent() == [("ALERT", key("disk", 1)), ("RECOVERY", key("disk", 1))]
    w.assert_agrees()


def test_a_problem_firing_again_after_its_recovery_opens_a_second_alert(world):
    w = world()
    w.post("disk")
    w.wait(2)
    w.post("disk", "resolved")
    w.wait(2)
    w.post("disk")  # within SpaceONE's 10 minutes of the first key's events
    assert [(a.event_key, a.state) for a in w.spaceone.alerts] == [
        (key("disk", 1), "RESOLVED"), (key("disk", 2), "TRIGGERED")]
    w.assert_agrees()
    w.wait(25)
    w.post("disk", "resolved")
    assert [a.state for a in w.spaceone.alerts] == ["RESOLVED", "RESOLVED"]
    w.assert_agrees()


def test_a_manual_resolve_sends_the_recovery_and_ends_the_refreshing(world):
    w = world()
    w.post("disk")
    w.wait(7)
    (incident,) = w.api.get("/api/incidents").json["items"]
    assert w.api.post(f"/api/incidents/{incident['id']}/resolve", json={"note": "fixed"}).status_code == 200
    w.settle()
    assert w.sent() == [("ALERT", key("disk", 1))] * 2 + [("RECOVERY", key("disk", 1))]
    assert [a.state for a in w.spaceone.alerts] == ["RESOLVED"]
    w.wait(15)
    assert len(w.spaceone.requests) == 3
    w.assert_agrees()


def test_refreshes_survive_a_restart(world, make_app, spaceone):
    w = world()
    w.post("disk")
    restarted = World(make_app(config(spaceone.url)), spaceone)  # a new process would see the same rows
    restarted.wait(5)
    assert restarted.sent() == [("ALERT", key("disk", 1))] * 2
    restarted.wait(25)
    restarted.post("disk", "resolved")
    assert [a.state for a in spaceone.alerts] == ["RESOLVED"]


@pytest.mark.parametrize("max_attempts, refresh_status", [(8, "delivered"), (1, "dead")])
def test_a_failing_refresh_is_retried_or_dead_lettered_like_any_delivery(world, max_attempts, refresh_status):
    w = world(max_attempts=max_attempts)
    w.post("disk")
    w.spaceone.failures = [503]
    w.wait(5)
    refresh = w.deliveries(sink="spaceone")[-1]
    [attempt] = w.delivery(refresh["id"])["attempt_log"]
    assert (refresh["refresh"], refresh["attempts"], attempt["status_code"]) == (True, 1, 503)
    assert refresh["last_error"] == attempt["error"]
    w.post("disk", "resolved")
    if max_attempts > 1:  # the recovery waits behind the refresh being retried (ordering per key)
        assert [row["status"] for row in w.deliveries(sink="spaceone")] == ["delivered", "pending", "pending"]
        w.wait(1)
    assert [row["status"] for row in w.deliveries(sink="spaceone")] == ["delivered", refresh_status, "delivered"]
    assert [kind for kind, _ in w.sent()] == ["ALERT", "ALERT", *(["ALERT"] if max_attempts > 1 else []), "RECOVERY"]
    assert [a.state for a in w.spaceone.alerts] == ["RESOLVED"]


def test_a_disabled_webhook_is_retried_not_dead_lettered(world):
    w = world()
    w.spaceone.state = "DISABLED"
    w.post("disk")
    (row,) = w.deliveries(sink="spaceone")
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"].startswith("the SpaceONE webhook is disabled; retrying until it is enabled")
    assert "ERROR_WEBHOOK_STATE_DISABLED" in row["last_error"]
    assert [(a["outcome"], a["status_code"]) for a in w.delivery(row["id"])["attempt_log"]] == [("retry", 400)]
    w.spaceone.state = "ENABLED"
    w.wait(1)
    assert w.deliveries(sink="spaceone")[0]["status"] == "delivered"
    assert [a.state for a in w.spaceone.alerts] == ["TRIGGERED"]
    w.assert_agrees()


def test_a_firing_arriving_after_its_own_recovery_opens_nothing(world):
    """The recovery came first (no period open, nothing to send); the firing it ends, delivered late, is stale."""
    w = world()
    t0 = clock.now()
    w.post("disk", "resolved", at=t0 + timedelta(minutes=1))
    w.post("disk", at=t0)
    assert w.spaceone.requests == []
    w.post("disk", at=t0 + timedelta(minutes=2))  # it fired again after that recovery: a new period
    assert w.sent() == [("ALERT", key("disk", 1))]


def test_a_recovery_older_than_the_latest_firing_is_not_sent(world):
    """The problem fired again after that recovery: it stays open here, in the incident store and in SpaceONE."""
    w = world()
    t0 = clock.now()
    w.post("disk", at=t0)
    w.wait(3)
    w.post("disk")
    w.post("disk", "resolved", at=t0 + timedelta(minutes=2))
    assert [kind for kind, _ in w.sent()] == ["ALERT", "ALERT"]
    assert [a.state for a in w.spaceone.alerts] == ["TRIGGERED"]
    w.assert_agrees()


def test_an_oci_alarms_ok_without_dimensions_closes_the_spaceone_alert_of_each_stream(world):
    """Oracle's grouped example with three streams: three SpaceONE alerts, kept open by refreshes;
    the alarm's OK names no stream and closes all three, each under its own key, and stops their
    refreshes; the same alarm's grouped firing from before the OK, delivered late, opens nothing
    anywhere, not even for the fourth stream, which was never open."""
    w = world()
    t0 = clock.now()
    w.oci("oracle_grouped.json", t0, slice(0, 3))
    members = sorted(i["fingerprint"] for i in w.api.get("/api/incidents").json["items"])
    assert [(a.event_key, a.state) for a in sorted(w.spaceone.alerts, key=lambda a: a.event_key)] == [
        (f"{fingerprint}-1", "TRIGGERED") for fingerprint in members]
    w.wait(15)
    assert [a.state for a in w.spaceone.alerts] == ["TRIGGERED"] * 3  # past SpaceONE's 10 minutes, thanks to refreshes

    (ok,) = w.oci("oracle_grouped_ok.json", clock.now(), slice(0, 0))
    assert [a.state for a in w.spaceone.alerts] == ["RESOLVED"] * 3
    recoveries = [row for row in w.deliveries(sink="spaceone") if row["alert_id"] == ok]
    assert sorted((row["member_fingerprint"], row["period"], row["refresh"]) for row in recoveries) == [
        (fingerprint, 1, False) for fingerprint in members]
    assert sorted(key for kind, key in w.sent() if kind == "RECOVERY") == [f"{fp}-1" for fp in members]
    assert {row["status"] for row in w.deliveries(sink="spaceone")} == {"delivered"}  # no refresh left pending
    assert any(row["refresh"] for row in w.deliveries(sink="spaceone"))
    sent = len(w.spaceone.requests)
    w.wait(20)
    assert len(w.spaceone.requests) == sent

    late = w.oci("oracle_grouped.json", t0 + timedelta(minutes=5))  # all four streams, ONS redelivering
    assert len(late) == 4 and len(w.spaceone.requests) == sent
    assert not set(late) & {row["alert_id"] for row in w.deliveries(sink="spaceone")}
    assert w.api.get("/api/incidents", query_string={"status": "triggered"}).json["total"] == 0
    assert len(w.spaceone.alerts) == 3
    w.assert_agrees()

    w.oci("oracle_grouped.json", clock.now(), slice(2, 4))  # firing again after the OK: new periods
    assert sorted(a.event_key.rsplit("-", 1)[1] for a in w.spaceone.open_alerts()) == ["1", "2"]
    w.assert_agrees()


def test_a_group_recovery_with_nothing_open_makes_every_members_earlier_firing_stale(world):
    w = world()
    t0 = clock.now()
    w.post("g", "resolved", at=t0 + timedelta(minutes=2), group="g")
    w.post("a", at=t0 + timedelta(minutes=1), group="g")
    assert w.spaceone.requests == []
    w.post("b", at=t0 + timedelta(minutes=3), group="g")
    assert w.sent() == [("ALERT", key("b", 1, "g"))]
    w.assert_agrees()


def test_a_group_recovery_older_than_a_members_latest_firing_leaves_its_spaceone_alert_open(world):
    w = world()
    t0 = clock.now()
    w.post("a", at=t0 + timedelta(minutes=3), group="g")
    w.post("b", at=t0, group="g")
    w.post("g", "resolved", at=t0 + timedelta(minutes=2), group="g")
    assert w.sent() == [("ALERT", key("a", 1, "g")), ("ALERT", key("b", 1, "g")), ("RECOVERY", key("b", 1, "g"))]
    assert [a.state for a in w.spaceone.alerts] == ["TRIGGERED", "RESOLVED"]
    w.assert_agrees()


def test_a_dropped_refresh_unblocks_the_row_that_waited_behind_it(world):
    """A refresh a dispatcher holds when its problem fires again stays, and the new row waits
    behind it, marked blocked.  Handed back untried, the refresh is dropped by the problem's next
    row, which must unblock the row that waited: else neither that row nor any later one of the
    problem would ever be claimed."""
    from sqlalchemy import update

    from gateway.store.models import DeliveryRow

    w = world()
    w.post("disk")
    refresh = w.deliveries(sink="spaceone")[-1]
    assert (refresh["refresh"], refresh["status"], refresh["attempts"]) == (True, "pending", 0)

    def hold(worker, until):
        with w.runtime.engine.begin() as conn:
            conn.execute(update(DeliveryRow).where(DeliveryRow.id == refresh["id"])
                         .values(claimed_by=worker, claimed_until=until))

    hold("another-dispatcher", clock.now() + timedelta(days=1))
    w.post("disk")
    waiting = w.deliveries(sink="spaceone")[-1]
    assert waiting["status"] == "pending" and waiting["id"] > refresh["id"]
    assert w.dispatcher.block_waiting("spaceone") == 1
    hold(None, None)  # handed back untried
    w.post("disk")
    rows = w.deliveries(sink="spaceone")
    assert refresh["id"] not in [row["id"] for row in rows]
    assert [(row["refresh"], row["status"]) for row in rows] == [(False, "delivered")] * 3 + [(True, "pending")]
    assert [kind for kind, _ in w.sent()] == ["ALERT"] * 3


def test_a_row_queued_while_a_delivery_is_recorded_is_not_held_behind_a_refresh(world, database_url):
    """PostgreSQL: an ingest holding the problem's lock queues a row while the dispatcher records
    the problem's delivery.  The record waits for the lock and must then see that row: a refresh
    queued after it would hold the problem's next row back for ``refresh_interval`` (bench/outbox.py
    found one 5 minutes late).  The ingest is played by hand on a connection of its own, so the
    record is sure to wait for it, and commits only once it does."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's one writer keeps the two transactions apart")
    w = world(refresh_interval="5m")
    (alert_id,) = w.post("disk", settle=False)
    engine = w.runtime.engine
    with engine.connect() as ingest:  # the alert again, queued as ingest queues it: locked, then a row
        alert = ingest.execute(select(AlertRow.__table__).where(AlertRow.id == alert_id)).one()._mapping
        problems.queue(ingest, "spaceone", alert_id, alert, clock.now())
        recording = threading.Thread(target=w.dispatcher.run_once, args=("spaceone", WORKER))
        recording.start()
        wait_until(lambda: lock_waits(engine, "sink_problems"), timeout=10)  # the record waits for the lock
        ingest.commit()
    recording.join(timeout=10)
    assert not recording.is_alive()
    assert [row["refresh"] for row in w.deliveries(sink="spaceone", status="pending")] == [False]
    w.post("disk", settle=False)  # the problem's next webhook: it goes out now, behind nothing
    w.settle()
    assert w.sent() == [("ALERT", key("disk", 1))] * 3
