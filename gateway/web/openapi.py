"""The OpenAPI 3.1 document of the webhook endpoint and of /api, served at /api/openapi.json.

It is built from the app's ``url_map``: every route whose view carries a ``documented(...)``
description is in it, the core's and a plugin blueprint's alike, with the marshmallow schemas
the view names for its query, body and answers (apispec turns them into JSON Schema).  The
statuses a kind of route always can answer are added here, so a view lists only its own: 401
without a valid bearer token and 403 to a role too low, 400/413/422 to a bad body, 422 to a bad
query, 404 to a path parameter no resource can have, 503 while the database is unavailable.

The document is served without the token: it holds nothing of the deployment (no source, key
or setting, only the routes and schemas of the installed code, whose plugins ``/health`` shows
anyway), and clients and tools read it to learn how to authenticate.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Callable, Mapping, Optional, Union

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify
from marshmallow import Schema, fields

from gateway.config import NAME
from gateway.fields import DURATION_TEXT, MAX_DURATION, Duration
from gateway.plugins import Registry
from gateway.web.common import Text

SchemaLike = Union[type[Schema], Schema, Mapping[str, Any]]
"""A marshmallow schema (class or instance), or a JSON Schema as a dict (which may hold schemas)."""
BodyLike = Union[SchemaLike, Callable[[Registry], SchemaLike]]
"""A body's schema, or a function of the plugin registry making it (a body that depends on the types)."""


class ErrorDetail(Schema):
    code = fields.String(required=True, metadata={"description": "stable, for programs: `not_found`, ..."})
    message = fields.String(required=True, metadata={"description": "for people"})
    fields_ = fields.Dict(data_key="fields", metadata={"description": "each bad field with its problems"})


class Error(Schema):
    """Every error the gateway answers, whatever raised it."""

    error = fields.Nested(ErrorDetail, required=True)


@dataclass(frozen=True)
class Raw:
    """An answer that is not JSON: ``media_type`` may be a range such as ``*/*``."""

    media_type: str
    description: str


@dataclass(frozen=True)
class Description:
    """What ``documented`` attaches to a view (see there)."""

    summary: str
    responses: Mapping[int, Union[SchemaLike, Raw, None]]
    query: Optional[SchemaLike] = None
    body: Optional[BodyLike] = None
    errors: Mapping[int, str] = field(default_factory=dict)
    public: bool = False
    database: bool = True
    methods: Optional[frozenset[str]] = None
    examples: Mapping[str, Any] = field(default_factory=dict)


def documented(summary: str, *, responses: Mapping[int, Union[SchemaLike, Raw, None]],
               query: Optional[SchemaLike] = None, body: Optional[BodyLike] = None,
               errors: Optional[Mapping[int, str]] = None, public: bool = False, database: bool = True,
               methods: Optional[tuple[str, ...]] = None, examples: Optional[Mapping[str, Any]] = None) -> Callable:
    """Describe a view for the OpenAPI document; put it on the view, next to its route decorator.

    ``responses``: each success status with the schema of its JSON body (None: no body; ``Raw``:
    not JSON).  ``query`` and ``body``: the schemas the view loads them with (``body`` may be a
    function of the plugin registry returning it).  ``errors``: each
    error status the view itself raises, with when (the statuses every route of its kind can
    answer are added by the document; a text given here replaces theirs).  ``public``: no bearer
    token needed.  ``database=False``: a public view that never uses the database (no 503; a
    token is checked in the database).  ``methods``:
    the route's methods described, when not all of them.  ``examples``: a value for a path parameter.
    """
    def attach(view: Callable) -> Callable:
        view.openapi = Description(summary, responses, query, body, dict(errors or {}), public, database,
                                   frozenset(methods) if methods else None, dict(examples or {}))
        return view

    return attach


COMMON_ERRORS = {
    400: "the body is not strict JSON, is nested too deeply or holds an unpaired surrogate (`invalid_json`)",
    401: "no valid bearer token (`missing_token`, `invalid_token`)",
    403: "the caller's role is too low for this (`forbidden`)",
    404: "no such resource, or a path parameter no resource can have (`not_found`)",
    413: "the body is over the limit (`body_too_large`)",
    422: "the request was refused (`invalid_request`): `error.fields` names each bad field and its problems",
    503: "the database is unavailable (`unavailable`): nothing was changed; retry after `Retry-After` seconds",
}
_HEADERS = {
    401: {"WWW-Authenticate": "`Bearer realm=\"gateway\"`"},
    503: {"Retry-After": "seconds to wait before retrying"},
}
_CONVERTERS = {
    "id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1, "examples": [1]},
    "source_key": {"type": "string", "pattern": f"^{NAME}$", "examples": ["alertmanager-prod"]},
    "default": {"type": "string", "pattern": "^[^/]+$"},
}
_ARGUMENT = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
_HIDDEN_METHODS = frozenset({"HEAD", "OPTIONS"})


def build_document(app: Flask) -> dict:
    """The document of every documented route of ``app``."""
    marshmallow = MarshmallowPlugin()
    spec = APISpec(title="Alert integration gateway", version=version("alert-gateway"), openapi_version="3.1.0",
                   plugins=[marshmallow],
                   info={"description": "Webhooks in (`/hooks`), operations (`/api`). Errors are always "
                                        "`{\"error\": {\"code\", \"message\", \"fields\"?}}`."},
                   security=[{"bearer": []}])
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                                "description": "GATEWAY_ADMIN_TOKEN"})
    marshmallow.converter.add_attribute_function(_text_patterns)
    marshmallow.converter.add_attribute_function(_durations)
    spec.components.schema("Error", schema=Error)
    registry = app.extensions["gateway"].registry
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        described: Optional[Description] = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if described is None:
            continue
        methods = sorted((described.methods or rule.methods) - _HIDDEN_METHODS)
        for path, parameters, chosen in _expanded(rule.rule):
            name = ".".join((rule.endpoint, *chosen))
            spec.path(path=path, operations={
                method.lower(): _operation(described, parameters, method, name, registry) for method in methods})
    return spec.to_dict()


DESCRIBED_PREFIXES = ("/api/", "/hooks/")
"""Where every route must be documented (console pages, /health and /metrics need not)."""


def undocumented_routes(app: Flask) -> list[str]:
    """``"GET /path"`` for each route under ``DESCRIBED_PREFIXES`` whose view lacks ``documented``."""
    return sorted(f"{method} {rule.rule}" for rule in app.url_map.iter_rules()
                  if rule.rule.startswith(DESCRIBED_PREFIXES)
                  and getattr(app.view_functions[rule.endpoint], "openapi", None) is None
                  for method in rule.methods - _HIDDEN_METHODS)


def _text_patterns(converter, field: fields.Field, ret: dict, **kwargs) -> dict:
    """Patterns as JSON Schema (ECMA-262) reads them: Python's end of text ``\\Z`` is ``$`` there;
    a ``Text`` field refuses NUL, which no database column can hold (a 422 naming the field)."""
    if isinstance(field, Text) and "pattern" not in ret:
        return {"pattern": "^[^\\u0000]*$"}
    if ret.get("pattern", "").endswith("\\Z"):
        return {"pattern": ret["pattern"][:-2] + "$"}
    return {}


def _durations(converter, field: fields.Field, ret: dict, **kwargs) -> dict:
    """A ``Duration`` is seconds (a number) or a text such as ``10m``, up to ``MAX_DURATION``."""
    if not isinstance(field, Duration):
        return {}
    return {"type": ["number", "string", *(["null"] if field.allow_none else [])], "minimum": 0,
            "maximum": MAX_DURATION, "pattern": DURATION_TEXT.pattern}


def _expanded(rule: str) -> list[tuple[str, list[dict], tuple[str, ...]]]:
    """The OpenAPI paths of a werkzeug rule with their path parameters; an ``any(a, b)``
    argument makes one path per value (each its own operation), and the values chosen are returned."""
    paths = [("", [], ())]
    position = 0
    for match in _ARGUMENT.finditer(rule):
        literal = rule[position:match.start()]
        position = match.end()
        converter, name = match["converter"] or "default", match["name"]
        if converter == "any":
            values = [value.strip().strip("'\"") for value in match["args"].split(",")]
            paths = [(path + literal + value, params, (*chosen, value))
                     for path, params, chosen in paths for value in values]
        else:
            parameter = {"in": "path", "name": name, "required": True, "schema": dict(_CONVERTERS[converter])}
            paths = [(path + literal + "{" + name + "}", [*params, parameter], chosen) for path, params, chosen in paths]
    return [(path + rule[position:], params, chosen) for path, params, chosen in paths]


def _operation(described: Description, parameters: list[dict], method: str, name: str, registry: Registry) -> dict:
    operation: dict[str, Any] = {"summary": described.summary, "operationId": f"{name}.{method.lower()}",
                                 "tags": [name.partition(".")[0]], "responses": {}}
    parameters = [{**p, "schema": {**p["schema"], "examples": [described.examples[p["name"]]]}}
                  if p["name"] in described.examples else p for p in parameters]
    if parameters:
        operation["parameters"] = parameters
    if described.query is not None:
        operation["parameters"] = [*parameters, {"in": "query", "schema": described.query}]
    if described.body is not None:
        body = described.body(registry) if inspect.isfunction(described.body) else described.body
        operation["requestBody"] = {"required": _needs_body(body), "content": {"application/json": {"schema": body}}}
    if described.public:
        operation["security"] = []
    for status, schema in described.responses.items():
        operation["responses"][str(status)] = _success(schema)
    for status, text in sorted(_errors(described, bool(parameters)).items()):
        answer = {"description": text, "content": {"application/json": {"schema": "Error"}}}
        if status in _HEADERS:
            answer["headers"] = {name: {"description": what, "required": True, "schema": {"type": "string"}}
                                 for name, what in _HEADERS[status].items()}
        operation["responses"][str(status)] = answer
    return operation


def _needs_body(schema: SchemaLike) -> bool:
    """An absent body is loaded as ``{}``: it will do unless the schema requires a field."""
    if isinstance(schema, Mapping):
        return True
    instance = schema() if isinstance(schema, type) else schema
    return any(f.required for f in instance.fields.values())


def _success(schema: Union[SchemaLike, Raw, None]) -> dict:
    if schema is None:
        return {"description": "no body"}
    if isinstance(schema, Raw):
        return {"description": schema.description, "content": {schema.media_type: {"schema": {}}}}
    return {"description": "success", "content": {"application/json": {"schema": schema}}}


def _errors(described: Description, has_path_parameters: bool) -> dict[int, str]:
    """The view's own error statuses and those every route of its kind can answer."""
    implied = set()
    if not described.public:
        implied.update((401, 403))
    if described.query is not None:
        implied.add(422)
    if described.body is not None:
        implied.update((400, 413, 422))
    if has_path_parameters:
        implied.add(404)
    if described.database or not described.public:  # a token is looked up in the database
        implied.add(503)
    return {**{status: COMMON_ERRORS[status] for status in implied}, **described.errors}


bp = Blueprint("openapi", __name__)


@bp.get("/api/openapi.json")
@documented("This document", responses={200: {"type": "object", "description": "OpenAPI 3.1"}}, public=True,
            database=False)
def openapi_document():
    """Built once per process, from the routes of the core and of every plugin's blueprint."""
    document = current_app.extensions.get("openapi")
    if document is None:
        document = current_app.extensions["openapi"] = build_document(current_app)
    return jsonify(document)
