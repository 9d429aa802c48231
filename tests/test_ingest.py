"""POST /hooks/<type>/<key>/: every refusal, the accepted path, idempotency, atomicity and routing."""
from __future__ import annotations

import io
import json
import threading

import pytest
import testkit
from testkit.support import admin_client, wait_until
from sqlalchemy import create_engine, func, select, text

from gateway.app import create_app
from gateway.incidents.service import timeline
from gateway.pipeline import transaction
from gateway.pipeline.outbox import Dispatcher
from gateway.store.models import AlertRow, DeliveryRow, Incident, RawRequest, TimelineEntry

CONFIG = """
global:
  max_body_size: 1KiB
sources:
  - key: src
    type: testsrc
  - key: paused
    type: testsrc
    enabled: false
  - key: locked
    type: testsrc
    token: s3cret
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""

ALERT = {"id": "evt-1", "title": "disk full", "severity": "critical"}
TABLES = (RawRequest, AlertRow, Incident, TimelineEntry, DeliveryRow)


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in TABLES}


@pytest.fixture
def gw(make_app):
    return make_app(CONFIG)


@pytest.fixture
def engine(gw):
    return gw.extensions["gateway"].engine


def rejected_total(client, source: str, reason: str) -> float:
    return testkit.metric(client.get("/metrics").get_data(as_text=True),
                          "gateway_webhooks_rejected_total", source=source, reason=reason)


REFUSALS = {
    "unknown key": dict(path="/hooks/testsrc/nope/", json=ALERT,
                        expect=(404, "unknown_source", "unknown")),
    "type differs from the URL": dict(path="/hooks/whatap/src/", json=ALERT,
                                      expect=(404, "unknown_source", "src")),
    "disabled source": dict(path="/hooks/testsrc/paused/", json=ALERT, expect=(403, "source_disabled", "paused")),
    "too large, Content-Length": dict(path="/hooks/testsrc/src/", data=json.dumps({"pad": "x" * 1024}),
                                      content_type="application/json", expect=(413, "body_too_large", "src")),
    "too large, chunked": dict(path="/hooks/testsrc/src/",
                               streamed=json.dumps({"pad": "x" * 1024}).encode(),
                               headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                               environ_overrides={"wsgi.input_terminated": True},  # what gunicorn sets
                               expect=(413, "body_too_large", "src")),
    "unparseable JSON": dict(path="/hooks/testsrc/src/", data=b'{"id": ', content_type="application/json",
                             expect=(400, "invalid_json", "src")),
    "failed verify": dict(path="/hooks/testsrc/locked/", json=ALERT, headers={"X-Test-Token": "guess"},
                          expect=(401, "unauthorized", "locked")),
    "parse rejection": dict(path="/hooks/testsrc/src/", json={"severity": "critical"},
                            expect=(422, "invalid_payload", "src")),
    "plugin produced an invalid alert": dict(path="/hooks/testsrc/src/", json={**ALERT, "severity": "urgent"},
                                             expect=(422, "invalid_payload", "src")),
    "plugin crashed": dict(path="/hooks/testsrc/src/", json={**ALERT, "crash": True},
                           expect=(422, "unprocessable_payload", "src")),
    "GET": dict(method="GET", path="/hooks/testsrc/src/", expect=(405, "method_not_allowed", "src")),
    "a NUL in the key": dict(path="/hooks/testsrc/a%00b/", json=ALERT, expect=(404, "unknown_source", "unknown")),
    "NaN, which is no JSON": dict(path="/hooks/testsrc/src/", data=b'{"id": "e", "title": "t", "v": NaN}',
                                  content_type="application/json", expect=(400, "invalid_json", "src")),
    "a number beyond a float": dict(path="/hooks/testsrc/src/", data=b'{"id": "e", "title": "t", "v": -1e400}',
                                    content_type="application/json", expect=(400, "invalid_json", "src")),
    "a handshake holding Infinity": dict(path="/hooks/testsrc/src/", data=b'{"hello": Infinity}',
                                         content_type="application/json", expect=(400, "invalid_json", "src")),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusal_is_json_counted_and_stores_nothing(gw, engine, case):
    case = dict(case)
    status, code, label = case.pop("expect")
    if "streamed" in case:  # no Content-Length: the limit must hold while reading
        case["input_stream"] = io.BytesIO(case.pop("streamed"))
    client = gw.test_client()
    before = rejected_total(client, label, code)
    response = client.open(method=case.pop("method", "POST"), **case)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    assert rejected_total(client, label, code) == before + 1
    assert counts(engine) == dict.fromkeys(counts(engine), 0)


def test_parse_rejection_names_each_field(gw):
    response = gw.test_client().post("/hooks/testsrc/src/", json={"severity": "urgent"})
    assert response.status_code == 422
    assert response.json["error"]["fields"] == {"id": "missing", "title": "missing"}
    assert response.json["error"]["message"] == "payload rejected: id (missing), title (missing)"


def test_method_not_allowed_names_post(gw):
    response = gw.test_client().put("/hooks/testsrc/src")
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")


@pytest.mark.parametrize("path", ["/hooks/testsrc/src/", "/hooks/testsrc/src"])
def test_trailing_slash_is_optional(gw, engine, path):
    response = gw.test_client().post(path, json=ALERT)
    assert response.status_code == 202, response.json
    assert counts(engine)["raw_requests"] == 1


def test_accepted_request_is_stored_exactly_with_secrets_redacted(gw, engine):
    body = '{"id": "evt-7",  "title": "디스크 가득 참", "severity": "error"}'.encode()
    response = gw.test_client().post(
        "/hooks/testsrc/src/", data=body, content_type="application/json; charset=utf-8",
        headers={"Authorization": "Bearer vendor-secret", "X-Webhook-Token": "hook-secret", "X-Trace": "t-1"},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert response.status_code == 202
    with engine.connect() as conn:
        alert = conn.execute(select(AlertRow.__table__)).one()
        raw = conn.execute(select(RawRequest.__table__)).one()
    assert response.json == {"status": "accepted", "alerts": [alert.id], "refused": [], "duplicates": []}
    assert (alert.raw_request_id, alert.external_id, alert.title, alert.severity) == (
        raw.id, "evt-7", "디스크 가득 참", "error")
    assert (raw.body, raw.content_type, raw.remote_addr, raw.external_id, raw.method, raw.path) == (
        body, "application/json; charset=utf-8", "10.1.2.3", "evt-7", "POST", "/hooks/testsrc/src/")
    assert raw.headers["authorization"] == raw.headers["x-webhook-token"] == "[redacted]"
    assert raw.headers["x-trace"] == "t-1"
    assert "vendor-secret" not in json.dumps(raw.headers) and "hook-secret" not in json.dumps(raw.headers)


def test_multi_alert_request(gw, engine):
    payload = {"alerts": [{"id": "a", "title": "cpu", "problem": "cpu"},
                          {"id": "b", "title": "mem", "problem": "mem", "status": "resolved"}]}
    response = gw.test_client().post("/hooks/testsrc/src/", json=payload)
    assert response.status_code == 202
    with engine.connect() as conn:
        rows = conn.execute(select(AlertRow.id, AlertRow.external_id, AlertRow.status).order_by(AlertRow.id)).all()
        raw = conn.execute(select(RawRequest.alert_count, RawRequest.external_id)).one()
    assert response.json["alerts"] == [r.id for r in rows]
    assert [(r.external_id, r.status) for r in rows] == [("a", "firing"), ("b", "resolved")]
    assert tuple(raw) == (2, "a|b")


def test_one_request_with_two_alerts_of_one_problem_lists_both_on_the_timeline(gw, engine):
    """The first alert creates the incident, the second joins it: both show, neither twice."""
    payload = {"alerts": [{"id": "a", "title": "cpu", "problem": "cpu"}, {"id": "b", "title": "cpu", "problem": "cpu"}]}
    response = gw.test_client().post("/hooks/testsrc/src/", json=payload)
    assert response.status_code == 202
    first, second = response.json["alerts"]
    with engine.connect() as conn:
        incident_id = conn.execute(select(Incident.id)).scalar_one()
        entries = timeline(conn, incident_id)
    assert [(e.kind, e.alert_id) for e in entries] == [("created", first), ("webhook_received", second)]
    assert entries[0].raw_request_id == entries[1].raw_request_id is not None


def test_json_nested_too_deeply_is_refused(make_app):
    client = make_app(CONFIG.replace("1KiB", "1MiB")).test_client()
    response = client.post("/hooks/testsrc/src/", data=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_json")
    assert response.json["error"]["message"] == "body is not valid JSON: nested too deeply"


# Escapes for NUL and lone surrogates: valid JSON, but text PostgreSQL or UTF-8 cannot hold.
UNSTORABLE = (b'{"id": "evt\\u0000-%s", "title": "disk\\u0000full \\ud800", "description": "\\udfff!",'
              b' "resource": "%s", "problem": "p\\u0000"}')


def test_text_no_column_can_hold_is_cleaned_and_the_alert_kept(gw, engine):
    """No alert is lost to its text: NUL and lone surrogates become U+FFFD, overlong values are
    cut to their column, and an overlong id becomes its digest, which still deduplicates."""
    client = gw.test_client()
    body = UNSTORABLE % (b"i" * 300, b"r" * 600)
    content_type = "application/json; profile=" + "x" * 300
    response = client.post("/hooks/testsrc/src/", data=body, content_type=content_type)
    assert response.status_code == 202, response.json
    with engine.connect() as conn:
        alert = conn.execute(select(AlertRow)).one()
        raw = conn.execute(select(RawRequest)).one()
        incident = conn.execute(select(Incident.title, Incident.resource_name)).one()
    assert (alert.title, alert.description) == ("disk\ufffdfull \ufffd", "\ufffd!")
    assert alert.labels == {"problem": "p\ufffd"}
    assert alert.resource_name == "r" * 511 + "\u2026" and alert.resource_id == alert.resource_name
    assert alert.external_id == raw.external_id and alert.external_id.startswith("sha256:")
    assert raw.content_type == content_type[:254] + "\u2026"
    assert raw.body == body
    assert tuple(incident) == (alert.title, alert.resource_name)
    again = client.post("/hooks/testsrc/src/", data=body, content_type="application/json")
    assert (again.status_code, again.json) == (200, {"status": "duplicate"})
    other = client.post("/hooks/testsrc/src/", data=UNSTORABLE % (b"i" * 299 + b"j", b"r"),
                        content_type="application/json")
    assert other.status_code == 202, "ids that differ past the column's length stay distinct"


def test_a_surrogate_sent_as_raw_bytes_is_cleaned_too(gw, engine):
    """``json.loads`` decodes bytes with surrogatepass: a surrogate's bytes get through, not only its escape."""
    response = gw.test_client().post("/hooks/testsrc/src/", data=b'{"id": "e\xed\xa0\x80", "title": "t\xed\xb0\x80"}',
                                     content_type="application/json")
    assert response.status_code == 202, response.json
    with engine.connect() as conn:
        assert tuple(conn.execute(select(AlertRow.external_id, AlertRow.title)).one()) == ("e\ufffd", "t\ufffd")


def test_a_value_the_database_still_refuses_is_422_not_503(gw, engine, database_url, monkeypatch):
    """The net under the cleaning: were a value to slip through, the sender learns that
    retrying cannot help, instead of being told the database is down."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite stores NUL; the refusal to provoke is PostgreSQL's")
    from gateway.pipeline import ingest

    monkeypatch.setattr(ingest, "cleaned", lambda payload: payload)
    monkeypatch.setattr(ingest, "clean_text", lambda text: text)
    client = gw.test_client()
    before = rejected_total(client, "src", "unstorable_payload")
    response = client.post("/hooks/testsrc/src/", json={**ALERT, "title": "disk\u0000full"})
    assert (response.status_code, response.json["error"]["code"]) == (422, "unstorable_payload")
    assert "NUL" in response.json["error"]["message"]
    assert rejected_total(client, "src", "unstorable_payload") == before + 1
    assert counts(engine) == dict.fromkeys(counts(engine), 0)


def test_duplicate_changes_nothing(gw, engine):
    client = gw.test_client()
    assert client.post("/hooks/testsrc/src/", json=ALERT).status_code == 202
    stored = counts(engine)
    assert stored == {"raw_requests": 1, "alerts": 1, "incidents": 1, "timeline_entries": 1, "deliveries": 0}
    second = client.post("/hooks/testsrc/src/", json={**ALERT, "title": "changed"})
    assert (second.status_code, second.json) == (200, {"status": "duplicate"})
    assert counts(engine) == stored
    with engine.connect() as conn:
        assert conn.execute(select(Incident.event_count, Incident.title)).one() == (1, "disk full")


def test_concurrent_copies_in_separate_processes_accept_exactly_one(database_url, write_config):
    """Workers of one server are processes: the database alone must decide which copy wins."""
    processes = 3
    copy = ("/hooks/testsrc/src/", json.dumps(ALERT).encode(), {"Content-Type": "application/json"})
    answers = sorted(testkit.race(database_url, write_config(CONFIG), [[copy]] * processes), key=lambda a: a[0])
    assert [status for status, _ in answers] == [200] * (processes - 1) + [202]
    assert all(body == {"status": "duplicate"} for _, body in answers[:-1])
    engine = create_engine(database_url)
    assert counts(engine) == {"raw_requests": 1, "alerts": 1, "incidents": 1, "timeline_entries": 1, "deliveries": 0}
    engine.dispose()


COPIES = {
    # No delivery id of the plugin's: the request's id is made of its alerts' ids, and a copy's first
    # alert waits on the alerts' unique index (or on the incident the first copy updated).
    "the alerts' own ids": ({}, ALERT, ALERT, 0, "transactionid"),
    # The plugin's own delivery id, alerts that differ: only the delivery id's lock makes the copy wait.
    "the plugin's delivery id": ({"X-Delivery-Id": "d-1"}, ALERT, {**ALERT, "id": "evt-2", "problem": "other"}, 1,
                                 "advisory"),
}


@pytest.mark.parametrize("kind", COPIES)
def test_a_copy_sent_while_the_first_is_uncommitted_waits_for_it_then_is_a_duplicate(gw, engine, make_app,
                                                                                     monkeypatch, kind):
    """PostgreSQL's raw journal has no unique index across its partitions: what makes the copy wait
    is the delivery id's advisory lock, which is taken only when nothing else would.  The copy goes
    to another app, as to another worker: one app's group commit would queue it behind the first."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writers never run side by side")
    headers, first, copy, advisory_locks, waits_on = COPIES[kind]
    held, release, answers = threading.Event(), threading.Event(), {}
    original = transaction.commit_together

    def hold_first(engine_, work):
        monkeypatch.setattr(transaction, "commit_together", original)  # the copy commits as usual

        def work_then_wait(conn):
            result = work(conn)
            held.set()
            assert release.wait(20)
            return result
        return original(engine_, work_then_wait)

    def post(name, app, payload):
        answers[name] = app.test_client().post("/hooks/testsrc/src/", json=payload, headers=headers)

    monkeypatch.setattr(transaction, "commit_together", hold_first)
    senders = [threading.Thread(target=post, args=("first", gw, first))]
    senders[0].start()
    try:
        assert held.wait(20)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                                     "(SELECT oid FROM pg_database WHERE datname = current_database())")
                                ).scalar() == advisory_locks
        senders.append(threading.Thread(target=post, args=("copy", make_app(CONFIG), copy)))
        senders[1].start()
        wait_until(lambda: waiting_on(engine) == [waits_on])
        assert "copy" not in answers
    finally:
        release.set()
        for sender in senders:
            sender.join(20)
    assert (answers["first"].status_code, answers["copy"].status_code) == (202, 200), answers["copy"].json
    assert answers["copy"].json == {"status": "duplicate"}
    assert counts(engine) == {"raw_requests": 1, "alerts": 1, "incidents": 1, "timeline_entries": 1, "deliveries": 0}


def waiting_on(engine) -> list[str]:
    """The kinds of lock this database's sessions are waiting for (PostgreSQL)."""
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT wait_event FROM pg_stat_activity WHERE datname = current_database()"
                                      " AND wait_event_type = 'Lock'")).scalars())


@pytest.fixture
def refusing_alert_inserts(engine):
    """The database refuses every alerts INSERT, i.e. after the raw request and the incident were written."""
    if engine.dialect.name == "sqlite":
        create = ["CREATE TRIGGER refuse_alerts BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'refused'); END"]
        drop = ["DROP TRIGGER refuse_alerts"]
    else:
        create = ["CREATE FUNCTION refuse_alerts() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$"
                  " LANGUAGE plpgsql",
                  "CREATE TRIGGER refuse_alerts BEFORE INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION refuse_alerts()"]
        drop = ["DROP TRIGGER refuse_alerts ON alerts", "DROP FUNCTION refuse_alerts()"]

    def run(statements):
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    run(create)
    yield lambda: run(drop)
    with engine.connect() as conn:
        still_there = conn.execute(text(
            "SELECT count(*) FROM sqlite_master WHERE name = 'refuse_alerts'" if engine.dialect.name == "sqlite"
            else "SELECT count(*) FROM pg_trigger WHERE tgname = 'refuse_alerts'")).scalar()
    if still_there:
        run(drop)


def test_failure_mid_ingest_stores_nothing_and_answers_503(make_app, receiver, refusing_alert_inserts):
    gw = make_app(CONFIG.replace("route:", f"  - name: web\n    type: testhttp\n    url: {receiver.url}\nroute:")
                  .replace("sinks: [itms]", "sinks: [itms, web]"))
    client, engine = gw.test_client(), gw.extensions["gateway"].engine
    before = rejected_total(client, "src", "database_unavailable")
    response = client.post("/hooks/testsrc/src/", json=ALERT)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"] == "5"
    assert counts(engine) == dict.fromkeys(counts(engine), 0)
    assert rejected_total(client, "src", "database_unavailable") == before + 1
    refusing_alert_inserts()
    retried = client.post("/hooks/testsrc/src/", json=ALERT)
    assert retried.status_code == 202  # the failed attempt left no duplicate marker behind
    assert counts(engine) == {"raw_requests": 1, "alerts": 1, "incidents": 1, "timeline_entries": 1, "deliveries": 1}


@pytest.fixture
def database_down(write_config):
    app = create_app({"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x", "CONFIG": write_config(CONFIG),
                      "TESTING": True}, extra_plugins=[testkit])
    yield app
    app.extensions["gateway"].engine.dispose()


def test_health_reports_the_database_down(database_down):
    response = database_down.test_client().get("/health")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["database"] == {"ok": False, "error": "OperationalError", "backend": "postgresql"}
    ready, live = database_down.test_client().get("/health/ready"), database_down.test_client().get("/health/live")
    assert (ready.status_code, ready.json["database"], ready.json["ok"]) == (503, False, False)
    assert live.status_code == 200  # the process answers: no orchestrator restarts it for the database


@pytest.mark.parametrize("key", ["src", "api-created-maybe"])
def test_webhook_answers_503_with_the_database_down(database_down, key):
    response = database_down.test_client().post(f"/hooks/testsrc/{key}/", json=ALERT)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "unavailable"


def test_handshake_answers_the_plugin_reply_and_is_recorded(gw, engine):
    api = admin_client(gw)
    response = gw.test_client().post("/hooks/testsrc/src/", json={"hello": "x"})
    assert (response.status_code, response.json) == (200, {"status": "hello"})
    listed = api.get("/api/sources/src/handshakes").json
    assert listed["total"] == 1
    entry = listed["items"][0]
    assert (entry["status"], entry["record"]) == (200, {"kind": "hello", "from": "x"})
    assert api.get(entry["raw_url"]).json == {"hello": "x"}
    assert {k: v for k, v in counts(engine).items()} == {
        "raw_requests": 1, "alerts": 0, "incidents": 0, "timeline_entries": 0, "deliveries": 0}


def test_routes_choose_the_sinks_and_nothing_is_sent_on_the_request_path(make_app, receiver):
    gw = make_app(f"""
        sources:
          - key: src
            type: testsrc
        sinks:
          - name: itms
            type: itms
          - name: web
            type: testhttp
            url: {receiver.url}
        route:
          sinks: [itms]
          routes:
            - match: {{severity: critical}}
              sinks: [itms, web]
        """)
    client = gw.test_client()
    critical = client.post("/hooks/testsrc/src/", json={"id": "1", "title": "down", "severity": "critical"})
    warning = client.post("/hooks/testsrc/src/", json={"id": "2", "title": "slow", "severity": "warning"})
    assert (critical.status_code, warning.status_code) == (202, 202)
    api = admin_client(gw)
    queued = api.get("/api/deliveries?sink=web").json
    assert queued["total"] == 1
    assert (queued["items"][0]["alert_id"], queued["items"][0]["status"]) == (critical.json["alerts"][0], "pending")
    assert api.get("/api/deliveries?sink=itms").json["total"] == 0  # the incident store is inline, not queued
    assert receiver.requests == []
    Dispatcher(gw.extensions["gateway"].runtime, lease=5, poll=0.05).run_once("web")
    assert [(r["json"]["title"], r["json"]["status"]) for r in receiver.requests] == [("down", "firing")]
    assert api.get("/api/deliveries?sink=web&status=delivered").json["total"] == 1
