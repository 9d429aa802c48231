"""One problem, many processes: the database alone keeps exactly one open incident per fingerprint.

Gunicorn workers are processes, so these races use real ones: each spawned process
builds its own app on the test database, waits at a barrier, then posts its WhaTap
alerts through the webhook endpoint.  PostgreSQL losers hit the partial unique index and
the core retries them; SQLite serializes writers.  No request may see a 5xx.
"""
from __future__ import annotations

import json
from collections import Counter
import time
import uuid

import pytest
import testkit
from sqlalchemy import create_engine, func, select

from gateway.incidents.service import timeline
from gateway.store.models import AlertRow, Incident

TOKEN = "s3cret"
CONFIG = f"""
sources:
  - key: whatap-prod
    type: whatap
    token: {TOKEN}
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""
PROCESSES = 5
MINUTE = 60_000


def whatap(**changes) -> dict:
    payload = {
        "pcode": 31337, "projectName": "결제-운영", "time": int(time.time() * 1000), "oid": -2087423641,
        "oname": "pay-api-7f9c", "title": "[Critical][JAVA][결제-운영][pay-api][힙 사용량 과다]",
        "message": "힙 사용량이 97.3%입니다", "level": "Critical", "status": "on", "uuid": str(uuid.uuid4()),
        "metricName": "heap_use", "metricValue": "97.3", "metricThreshold": "95",
    }
    return {**payload, **changes}


def post(payload: dict) -> tuple[str, bytes, dict]:
    return ("/hooks/whatap/whatap-prod/", json.dumps(payload, ensure_ascii=False).encode(),
            {"Content-Type": "application/json", "X-Webhook-Token": TOKEN})


@pytest.fixture
def race(database_url, write_config):
    """race(batches) posts each batch of payloads from its own process, all released at once."""
    config_path = write_config(CONFIG)
    return lambda batches: testkit.race(database_url, config_path, [[post(p) for p in batch] for batch in batches])


@pytest.fixture
def db(database_url):
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def incidents(db) -> list:
    with db.connect() as conn:
        return conn.execute(select(Incident.__table__).order_by(Incident.id)).all()


def linked_alerts(db, incident_id: int) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).where(AlertRow.incident_id == incident_id)).scalar_one()


def timeline_kinds(db, incident_id: int) -> dict[str, int]:
    with db.connect() as conn:
        return dict(Counter(item.kind for item in timeline(conn, incident_id)))


def test_fifty_concurrent_alerts_make_one_incident(race, db):
    answers = race([[whatap() for _ in range(10)] for _ in range(PROCESSES)])

    assert sorted(status for status, _ in answers) == [202] * 50
    [incident] = incidents(db)
    assert (incident.status, incident.event_count, incident.severity) == ("triggered", 50, "critical")
    assert linked_alerts(db, incident.id) == 50
    assert timeline_kinds(db, incident.id) == {"created": 1, "webhook_received": 49}


@pytest.fixture
def opened(make_app, db):
    """One open incident, created before the race, and the WhaTap time it started at."""
    start = int(time.time() * 1000) - 10 * MINUTE
    path, body, headers = post(whatap(time=start))
    assert make_app(CONFIG).test_client().post(path, data=body, headers=headers).status_code == 202
    return start


def test_recovery_racing_late_repeats_resolves_once(opened, race, db):
    """Repeats that happened before the recovery join the incident whichever commits first; none reopens it."""
    recovery = whatap(status="off", time=opened + 5 * MINUTE)
    repeats = [whatap(time=opened + MINUTE + i) for i in range(49)]
    batches = [repeats[i::PROCESSES] for i in range(PROCESSES)]
    batches[0].insert(len(batches[0]) // 2, recovery)

    answers = race(batches)

    assert sorted(status for status, _ in answers) == [202] * 50
    [incident] = incidents(db)
    assert (incident.status, incident.event_count) == ("resolved", 51)
    assert incident.resolved_at.timestamp() * 1000 == pytest.approx(opened + 5 * MINUTE, abs=1)
    assert linked_alerts(db, incident.id) == 51
    assert timeline_kinds(db, incident.id) == {"created": 1, "webhook_received": 49, "status_changed": 1}

