"""Plugins add routes with ``register_blueprints`` and hand the pipeline alerts with ``Transaction.submit``;
their views use ``gateway.views`` only, as the incident store's do."""
from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import pytest
from flask import Blueprint, jsonify
from sqlalchemy import select
from testkit.support import admin_client

from gateway import Alert, PluginError, hookimpl
from gateway.plugins import build_registry
from gateway.store.models import AlertRow, DeliveryRow
from gateway.views import ROLES, ApiError, json_object, require_role, transaction


def plugin(name: str, *blueprints):
    """An in-process plugin module registering ``blueprints``."""

    @hookimpl
    def register_blueprints(register):
        for blueprint in blueprints:
            register(blueprint)

    module = ModuleType(name)
    module.register_blueprints = register_blueprints
    return module


WIDGETS_API = Blueprint("widgets_api", __name__, url_prefix="/api/widgets")
WIDGETS_PAGES = Blueprint("widgets_pages", __name__, url_prefix="/console/widgets")


@WIDGETS_API.get("/needs/<role>")
def needs(role: str):
    require_role(role)
    return jsonify({"role": role})


@WIDGETS_API.post("/alerts")
def submit():
    """Submits the body's alert; ``"then_fail": true`` makes the transaction fail after it."""
    body = json_object()

    def work(tx):
        alert_id = tx.submit(Alert(status="firing", severity="warning", title=body.get("title", ""),
                                   fingerprint="widget-1", origin=body.get("origin", "widget")))
        if body.get("then_fail"):
            raise RuntimeError("the plugin failed after submitting")
        return alert_id

    try:
        return jsonify({"id": transaction(work)}), 201
    except ValueError as exc:
        raise ApiError(422, "invalid_alert", str(exc)) from None


@WIDGETS_PAGES.get("/")
def page():
    require_role("viewer")
    return "<h1>Widgets</h1>"


WIDGETS = plugin("widgets", WIDGETS_API, WIDGETS_PAGES)

HOOK_SINK = '{name: hook, type: testhttp, url: "http://127.0.0.1:9/"}'
CONFIG = f"""
sources: [{{key: src, type: testsrc}}]
sinks: [{{name: itms, type: itms}}, {HOOK_SINK}]
route: {{sinks: [itms, hook]}}
"""


@pytest.fixture
def widgets(make_app):
    """An admin client of an app with the widgets plugin."""
    return admin_client(make_app(CONFIG, plugins=[WIDGETS]))


def test_a_plugin_serves_several_blueprints_under_any_prefix(widgets):
    assert widgets.get("/api/widgets/needs/viewer").json == {"role": "viewer"}
    r = widgets.get("/console/widgets/")
    assert (r.status_code, r.text) == (200, "<h1>Widgets</h1>")


@pytest.mark.parametrize("role", ROLES)
def test_the_admin_token_holds_every_role_and_no_token_none(widgets, role):
    assert widgets.get(f"/api/widgets/needs/{role}").json == {"role": role}
    anonymous = widgets.application.test_client()
    r = anonymous.get(f"/api/widgets/needs/{role}")
    assert (r.status_code, r.json["error"]["code"]) == (401, "missing_token")
    r = anonymous.get(f"/api/widgets/needs/{role}", headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.json["error"]["code"]) == (401, "invalid_token")


def test_an_unknown_role_is_a_programming_error(widgets):
    with widgets.application.test_request_context(), pytest.raises(ValueError, match="unknown role 'root'"):
        require_role("root")


def _stored(app, table):
    with app.extensions["gateway"].engine.connect() as conn:
        return conn.execute(select(table)).all()


def test_a_submitted_alert_is_stored_and_queued_for_the_outbox_sinks_once_committed(widgets):
    app = widgets.application
    runtime = app.extensions["gateway"].runtime
    woken = runtime.wakeups.generation
    r = widgets.post("/api/widgets/alerts", json={"title": "disk full"})
    assert r.status_code == 201, r.json
    (alert,) = _stored(app, AlertRow.__table__)
    assert (alert.id, alert.origin, alert.title, alert.raw_request_id) == (r.json["id"], "widget", "disk full", None)
    assert alert.received_at is not None and alert.occurred_at == alert.received_at
    # The inline incident store is not applied to it; the outbox sink of its route gets a row.
    assert widgets.get("/api/incidents").json["total"] == 0
    assert [(d.alert_id, d.sink_name, d.status, d.ordering_key) for d in _stored(app, DeliveryRow.__table__)] == [
        (alert.id, "hook", "pending", "widget-1")]
    assert runtime.wakeups.generation == woken + 1


def test_a_submitted_alert_goes_nowhere_when_its_transaction_rolls_back(widgets):
    app = widgets.application
    runtime = app.extensions["gateway"].runtime
    woken = runtime.wakeups.generation
    r = widgets.post("/api/widgets/alerts", json={"title": "disk full", "then_fail": True})
    assert (r.status_code, r.json["error"]["code"]) == (500, "internal_error")
    assert _stored(app, AlertRow.__table__) == [] and _stored(app, DeliveryRow.__table__) == []
    assert runtime.wakeups.generation == woken


@pytest.mark.parametrize(("body", "problem"), [
    ({"title": "disk full", "origin": "webhook"}, "origin must say who made the alert"),
    ({"title": ""}, "title missing"),
])
def test_an_alert_the_core_would_refuse_is_not_submitted(widgets, body, problem):
    r = widgets.post("/api/widgets/alerts", json=body)
    assert (r.status_code, r.json["error"]["code"]) == (422, "invalid_alert")
    assert problem in r.json["error"]["message"]
    assert _stored(widgets.application, AlertRow.__table__) == []


WITHOUT_ITMS = f"""
sources: [{{key: src, type: testsrc}}]
sinks: [{HOOK_SINK}]
route: {{sinks: [hook]}}
"""


@pytest.mark.parametrize("disabled", [True, False])
def test_a_disabled_plugin_has_no_routes(make_app, monkeypatch, disabled):
    if disabled:
        monkeypatch.setenv("GATEWAY_DISABLE_PLUGINS", "itms")
    api = admin_client(make_app(WITHOUT_ITMS))
    r = api.get("/api/incidents")
    assert r.status_code == (404 if disabled else 200), r.json
    assert api.get("/api/events").status_code == 200  # the core's API is there either way


def test_the_incident_store_registers_its_blueprint_through_the_hook():
    registry = build_registry()
    assert registry.owner("blueprints", "incidents").name == "itms"


def imported_modules(path: Path) -> set[str]:
    """What a module imports: ``a.b`` for ``import a.b`` and for ``from a.b import c``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names} | {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def core_internals(imported: set[str]) -> list[str]:
    """The pipeline and the web modules behind ``gateway.views``: what a plugin must not import."""
    return sorted(name for name in imported if name.startswith(("gateway.pipeline", "gateway.web")))


def test_the_incident_store_imports_neither_the_pipeline_nor_the_web_internals():
    modules = sorted((Path(__file__).parent.parent / "gateway" / "incidents").glob("*.py"))
    assert len(modules) >= 3
    assert {path.name: core_internals(imported_modules(path)) for path in modules} == {
        path.name: [] for path in modules}


def test_the_import_check_can_fail(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from gateway.pipeline.ingest import in_transaction\nimport gateway.web.auth\n"
                      "from gateway.views import transaction\n")
    assert core_internals(imported_modules(module)) == ["gateway.pipeline.ingest", "gateway.web.auth"]


def test_a_blueprint_registered_by_two_plugins_names_both():
    twins = [plugin(name, Blueprint("twin", __name__)) for name in ("first", "second")]
    with pytest.raises(PluginError) as caught:
        build_registry(twins)
    head, _, owners = str(caught.value).partition(": by plugin ")
    assert head == "blueprint 'twin' is registered twice"
    assert set(owners.split(" and by plugin ")) == {"'first' ((registered in process))",
                                                    "'second' ((registered in process))"}


def test_registering_something_else_than_a_blueprint_stops_start_up():
    with pytest.raises(PluginError, match=r"^plugin 'odd' \(\(registered in process\)\) registered '/x', "
                                          r"not a Blueprint$"):
        build_registry([plugin("odd", "/x")])


def _health_taker():
    blueprint = Blueprint("health_taker", __name__)
    blueprint.get("/health", endpoint="get")(lambda: "mine")
    blueprint.post("/health", endpoint="post")(lambda: "a POST the core does not serve")
    return blueprint


@pytest.mark.parametrize(("blueprint", "message"), [
    (Blueprint("api", __name__, url_prefix="/api/mine"), "The name 'api' is already registered"),
    (_health_taker(), "blueprint 'health_taker' routes what is served already: GET /health"),
], ids=["core-name", "core-route"])
def test_a_plugin_cannot_take_over_what_the_core_serves(make_app, blueprint, message):
    with pytest.raises(PluginError) as caught:
        make_app(plugins=[plugin("usurper", blueprint)])
    assert str(caught.value).startswith("plugin 'usurper' ((registered in process)): ")
    assert message in str(caught.value)
