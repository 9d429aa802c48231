"""The first end-to-end path: a webhook in, an incident out, on both databases."""


def test_webhook_becomes_incident(client, api):
    r = client.post("/hooks/testsrc/src/", json={"id": "1", "title": "disk full", "severity": "critical"})
    assert r.status_code == 202, r.json
    assert r.json["status"] == "accepted" and len(r.json["alerts"]) == 1
    incidents = api.get("/api/incidents").json
    assert incidents["total"] == 1
    assert incidents["items"][0]["title"] == "disk full"
