"""A real Prometheus Alertmanager (Debian's prometheus-alertmanager) notifying the gateway.

Alerts are pushed into Alertmanager's own API; Alertmanager groups them, sends its webhook
to the gateway served on 127.0.0.1, re-sends each group every ``repeat_interval`` and sends
the resolved group when the alerts end.  Clustering is off.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests
from testkit.support import free_port, wait_until
from werkzeug.serving import make_server

BINARY = shutil.which("prometheus-alertmanager")
TOKEN = "am-s3cret"
CONFIG = f"""
sources:
  - key: am
    type: alertmanager
    token: {TOKEN}
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""
ALERTMANAGER_CONFIG = """
route:
  receiver: gateway
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 500ms
  repeat_interval: 1s
receivers:
  - name: gateway
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            credentials: {token}
"""

MISSING = "needs Debian's prometheus-alertmanager (.ci/run installs it)"
# Outside CI a machine without it skips; in CI (CI=true) the fixture fails instead.
pytestmark = pytest.mark.skipif(BINARY is None and os.environ.get("CI") != "true", reason=MISSING)


@pytest.fixture
def gateway_url(make_app):
    """The gateway on a real HTTP server on 127.0.0.1, as Alertmanager reaches it."""
    server = make_server("127.0.0.1", 0, make_app(CONFIG), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def start_alertmanager(gateway_url, tmp_path):
    """start_alertmanager(token) -> base URL of an Alertmanager whose only receiver is the ``am`` source."""
    procs = []

    def start(token: str = TOKEN) -> str:
        assert BINARY is not None, MISSING
        config = tmp_path / "alertmanager.yml"
        config.write_text(ALERTMANAGER_CONFIG.format(url=f"{gateway_url}/hooks/alertmanager/am/", token=token))
        port = free_port()
        proc = subprocess.Popen([BINARY, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, f"alertmanager exited with {proc.returncode}"
            try:
                return requests.get(f"{base}/-/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 20)
        return base

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def push(alertmanager: str, *instances: str, ended: bool = False) -> None:
    """Post alerts to Alertmanager's API v2, as Prometheus does; ``ended`` resolves them now."""
    now = datetime.now(timezone.utc)
    alerts = [{
        "labels": {"alertname": "DiskFull", "instance": instance, "job": "node", "severity": "critical"},
        "annotations": {"summary": f"disk full on {instance}"},
        "startsAt": (now - timedelta(minutes=5)).isoformat(),
        **({"endsAt": now.isoformat()} if ended else {}),
        "generatorURL": "http://prometheus.example/graph",
    } for instance in instances]
    assert requests.post(f"{alertmanager}/api/v2/alerts", json=alerts, timeout=5).status_code == 200


def notifications(alertmanager: str, metric: str = "alertmanager_notifications_total") -> float:
    """Alertmanager's own count of webhook notifications (``..._failed_total``: those refused)."""
    for line in requests.get(f"{alertmanager}/metrics", timeout=5).text.splitlines():
        if line.startswith(metric + '{integration="webhook"}'):
            return float(line.split()[-1])
    return 0.0


def incidents(api) -> dict[str, dict]:
    items = api.get("/api/incidents", query_string={"source": "am", "per_page": 100}).json["items"]
    return {item["resource"]["name"]: item for item in items}


def test_alertmanager_groups_open_dedupe_and_resolve_incidents(start_alertmanager, api):
    alertmanager = start_alertmanager()
    push(alertmanager, "db-1", "db-2")
    opened = wait_until(lambda: len(incidents(api)) == 2 and incidents(api))
    assert {i["status"] for i in opened.values()} == {"triggered"}
    assert {i["severity"] for i in opened.values()} == {"critical"}

    # Several repeat intervals go by: byte-identical reminders add no alert and no incident.
    sent = notifications(alertmanager)
    wait_until(lambda: notifications(alertmanager) >= sent + 2, 15)
    assert {name: i["event_count"] for name, i in incidents(api).items()} == {"db-1": 1, "db-2": 1}

    # The group grows: its next notification carries all three, and only db-3 is stored: it opens an
    # incident, while db-1 and db-2, already stored, are not counted again (idempotency per alert).
    push(alertmanager, "db-3")
    grown = wait_until(lambda: len(incidents(api)) == 3 and incidents(api))
    assert len({i["fingerprint"] for i in grown.values()}) == 3
    sent = notifications(alertmanager)
    wait_until(lambda: notifications(alertmanager) >= sent + 2, 15)
    assert {name: i["event_count"] for name, i in incidents(api).items()} == {"db-1": 1, "db-2": 1, "db-3": 1}

    # Alertmanager's fingerprint and generatorURL are metadata of the alert, not labels.
    [entry] = api.get(f"/api/incidents/{grown['db-3']['id']}").json["timeline"]
    alert = api.get(f"/api/alerts/{entry['alert_id']}").json
    assert alert["links"] == [{"title": "Prometheus", "url": "http://prometheus.example/graph"}]
    assert alert["annotations"]["summary"] == "disk full on db-3"
    assert len(alert["annotations"]["alertmanager.fingerprint"]) == 16
    assert set(alert["labels"]) == {"alertname", "instance", "job", "severity"}

    push(alertmanager, "db-1", "db-2", "db-3", ended=True)
    resolved = wait_until(lambda: {i["status"] for i in incidents(api).values()} == {"resolved"} and incidents(api))
    assert set(resolved) == {"db-1", "db-2", "db-3"}


def test_alertmanager_with_a_wrong_token_is_refused(start_alertmanager, api):
    alertmanager = start_alertmanager(token="not-the-token")
    push(alertmanager, "db-1")
    wait_until(lambda: notifications(alertmanager, "alertmanager_notifications_failed_total") >= 1, 15)
    assert incidents(api) == {}
