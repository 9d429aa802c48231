"""/api/openapi.json: a valid OpenAPI 3.1 document of every /hooks and /api route, which the
live app keeps to: schemathesis sends each operation generated requests and checks every answer
(status, content type, headers, body) against the document."""
from __future__ import annotations

import json
import re
import types

import pytest
import schemathesis
from flask import Blueprint, jsonify
from hypothesis import HealthCheck, given, settings, strategies as st
from marshmallow import Schema, fields
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance,
)

from gateway import hookimpl
from gateway.views import documented
from gateway.web.openapi import undocumented_routes
from testkit.support import ADMIN_TOKEN, OutboxDriver

CONFIG = """
sources:
  - key: src
    type: testsrc
  - key: alertmanager-prod
    type: alertmanager
sinks:
  - name: itms
    type: itms
  - name: http
    type: testhttp
    url: {url}
    max_attempts: 1
route:
  sinks: [itms, http]
"""
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _document(app) -> dict:
    response = app.test_client().get("/api/openapi.json")  # no token: the document is public
    assert response.status_code == 200, response.json
    return response.json


def test_the_document_is_valid_openapi_3_1_covering_every_route(app):
    document = _document(app)
    OpenAPIV31SpecValidator(document).validate()
    patterns = re.findall(r'"pattern": ("[^"]*")', json.dumps(document))
    assert patterns and not [p for p in patterns if "\\\\Z" in p], "Python's \\Z means a Z in JSON Schema"
    assert undocumented_routes(app) == []
    assert {path for path in document["paths"]} >= {
        "/hooks/{source_type}/{source_key}/", "/api/sources", "/api/sources/{key}", "/api/events/{event_id}/raw",
        "/api/deliveries/{delivery_id}/retry", "/api/config/reload", "/api/incidents/{incident_id}/comments",
        "/api/incidents/{incident_id}/acknowledge", "/api/incidents/{incident_id}/resolve", "/api/openapi.json"}
    hook = document["paths"]["/hooks/{source_type}/{source_key}/"]
    assert list(hook) == ["post"] and hook["post"]["security"] == []
    retry = document["paths"]["/api/deliveries/{delivery_id}/retry"]["post"]["responses"]
    assert sorted(retry) == ["200", "401", "403", "404", "409", "503"]
    assert retry["401"]["headers"]["WWW-Authenticate"]["required"] is True
    reload_ = document["paths"]["/api/config/reload"]["post"]["responses"]
    assert reload_["422"]["description"].endswith("(`invalid_config`)")


class _Checked(Schema):
    name = fields.String(required=True)


_plugin_bp = Blueprint("acme", __name__, url_prefix="/api/acme")


@_plugin_bp.post("/checks")
@documented("Add a check", body=_Checked, responses={201: _Checked}, errors={409: "exists"})
def _add_check():
    return jsonify({"name": "x"}), 201


@_plugin_bp.get("/secret")
def _undocumented():
    return jsonify({})


_acme = types.ModuleType("acme_plugin")
_acme.register_blueprints = hookimpl(lambda register: register(_plugin_bp))


def test_a_plugin_blueprint_contributes_its_paths_and_an_undocumented_route_is_named(make_app):
    app = make_app(plugins=[_acme])
    operation = _document(app)["paths"]["/api/acme/checks"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/_Checked"}
    assert sorted(operation["responses"]) == ["201", "400", "401", "403", "409", "413", "422", "503"]
    assert undocumented_routes(app) == ["GET /api/acme/secret"]


# -- the live app against its document ------------------------------------------------------

@pytest.fixture
def seeded(make_app, receiver):
    """An app with one of everything the path examples (id 1) name: a stored event, an incident,
    a dead delivery, a handshake; each answer that made them is checked against the document too."""
    receiver.default = (400, {}, "{}")
    app = make_app(CONFIG.format(url=receiver.url))
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    driver = OutboxDriver(app, "w1")
    hook = schema["/hooks/{source_type}/{source_key}/"]["POST"]
    for body, status in (({"id": "1", "title": "disk full"}, 202), ({"id": "1", "title": "disk full"}, 200),
                         ({"hello": "there"}, 200), ({"title": "no id"}, 422), ([1], 422)):
        response = driver.client.post("/hooks/testsrc/src/", json=body)
        assert response.status_code == status, response.json
        hook.validate_response(response)
    driver.drive("http", lambda: driver.deliveries(status="dead"))
    created = driver.api.post("/api/sources", json={"type": "testsrc", "key": "made", "token": "t"})
    assert created.status_code == 201, created.json
    schema["/api/sources"]["POST"].validate_response(created)
    return app


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
EXAMPLES = 10
"""Per operation, valid and invalid requests alike: 15 took 34 s on SQLite and 17 s on PostgreSQL on
a loaded machine (2026-12-05), 10 took 22 s and 13 s.  The same examples every run (``derandomize``); 100 per
operation, random, found nothing more on either database."""


def test_every_operation_answers_as_documented(seeded):
    """Generated requests, valid and invalid, to each operation, with the admin token."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", seeded)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = st.one_of(*operation.get_strategies_from_examples(),
                          *(operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

        @given(cases)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def answers_as_documented(case):
            case.call_and_validate(headers=BEARER, checks=CHECKS)

        try:
            answers_as_documented()
        except Exception as exc:  # every operation is tried; all that failed are shown
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
