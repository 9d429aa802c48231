"""A sink's bug on the ingest path is not the source's fault: the webhook is 202, the alert is
stored, the other sinks get it, and the failing sink's row is dead with the error, re-drivable.
Through the HTTP app on both databases, with real outbox deliveries to a local receiver."""
from __future__ import annotations

import testkit

from gateway.pipeline.outbox import Dispatcher


def config(url: str) -> str:
    good, buggy = (f"{{name: {name}, type: testhttp, url: '{url}'{extra}}}"
                   for name, extra in (("good", ""), ("buggy", ", broken_accepts: true")))
    return (f"{{sources: [{{key: src, type: testsrc}}], sinks: [{{name: itms, type: itms}}, {good}, {buggy}], "
            "route: {sinks: [itms, good, buggy]}}")


def sink_errors(client) -> float:
    return testkit.metric(client.get("/metrics").get_data(as_text=True),
                          "gateway_sink_errors_total", sink="buggy", stage="accepts")


def test_a_sink_whose_accepts_raises_costs_only_its_own_delivery(make_app, receiver, api, caplog):
    app = make_app(config(receiver.url))
    client = app.test_client()
    before = sink_errors(client)

    response = client.post("/hooks/testsrc/src/", json={"id": "e-1", "title": "disk full", "problem": "disk"})

    assert response.status_code == 202, response.json
    assert api.get("/api/incidents").json["total"] == 1
    rows = {row["sink"]: row for row in api.get("/api/deliveries").json["items"]}
    assert (rows["good"]["status"], rows["good"]["last_error"]) == ("pending", None)
    assert rows["buggy"]["status"] == "dead"
    assert rows["buggy"]["last_error"] == "accepts raised ValueError: a sink bug on 'disk full'"
    assert sink_errors(client) == before + 1
    assert "sink buggy raised in accepts" in caplog.text

    dispatcher = Dispatcher(app.extensions["gateway"].runtime, lease=5, poll=0.05)
    dispatcher.run_once("good")
    assert [r["json"]["title"] for r in receiver.requests] == ["disk full"]

    # Re-driven, the row is delivered: the bug was in accepts, not in deliver.
    assert api.post(f"/api/deliveries/{rows['buggy']['id']}/retry").status_code == 200
    dispatcher.run_once("buggy")
    assert api.get(f"/api/deliveries/{rows['buggy']['id']}").json["status"] == "delivered"
    assert len(receiver.requests) == 2
