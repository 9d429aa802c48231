"""A sink's bug on the ingest path is not the source's fault: the webhook is 202, the alert is
stored, the other sinks get it, and a failing outbox sink's row is dead with the error, re-drivable.
Through the HTTP app on both databases, with real outbox deliveries to a local receiver."""
from __future__ import annotations

import testkit
from testkit.support import ADMIN_TOKEN, admin_client

from gateway import InlineSinkType, hookimpl
from gateway.app import create_app
from gateway.incidents import service
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


class BrokenInlineSink(InlineSinkType):
    """An inline sink with a bug: it records an incident through the incident store, then raises."""

    name = "testbroken"

    def apply(self, tx, alert, settings):
        service.apply_alert(tx.connection, alert, None)
        raise RuntimeError("an inline sink bug")


class BrokenSinkPlugin:
    """Registered for this test only, so other tests' lists of sink types stay as they are."""

    @hookimpl
    def register_sink_types(self, register):
        register(BrokenInlineSink)


def test_an_inline_sink_that_raises_is_rolled_back_and_the_alert_stored_without_it(
        database_url, write_config, receiver, caplog):
    """The broken sink wrote an incident before raising: the rerun without it leaves only the incident store's."""
    app = create_app({"DATABASE_URL": database_url, "ADMIN_TOKEN": ADMIN_TOKEN, "TESTING": True, "CONFIG": write_config(
        "{sources: [{key: src, type: testsrc}], sinks: [{name: broken, type: testbroken}, {name: itms, type: itms}, "
        f"{{name: good, type: testhttp, url: '{receiver.url}'}}], route: {{sinks: [broken, itms, good]}}}}")},
        extra_plugins=[testkit, BrokenSinkPlugin()])
    client, api = app.test_client(), admin_client(app)
    errors = lambda: testkit.metric(client.get("/metrics").get_data(as_text=True),  # noqa: E731
                                    "gateway_sink_errors_total", sink="broken", stage="apply")
    before = errors()
    try:
        response = client.post("/hooks/testsrc/src/", json={"id": "e-2", "title": "disk full", "problem": "disk"})

        assert response.status_code == 202, response.json
        [incident] = api.get("/api/incidents").json["items"]
        assert incident["event_count"] == 1
        [row] = api.get("/api/deliveries").json["items"]
        assert (row["sink"], row["status"]) == ("good", "pending")
        assert errors() == before + 1
        assert "inline sink broken raised" in caplog.text
    finally:
        app.extensions["gateway"].engine.dispose()
