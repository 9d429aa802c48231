"""Bad client input to /api is a 4xx JSON error, alike on SQLite and PostgreSQL, never a 500.

PostgreSQL refuses NUL (0x00) in text and strings longer than a varchar column where SQLite
takes both, so unchecked, the same request was 2xx on one database and 500 on the other; an
unpaired surrogate in a JSON body ("\\ud800", no UTF-8) was a 500 on both.
"""
from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import DataError, OperationalError

from gateway.store.models import SourceRow

NAME_MAX = SourceRow.__table__.c.name.type.length
ALERT = {"id": "evt-1", "title": "disk full", "severity": "critical"}


@pytest.fixture
def seeded(api, client) -> int:
    """A source made through the API (key ``team``), one event, its incident (whose id is returned)."""
    assert api.post("/api/sources", json={"key": "team", "type": "testsrc"}).status_code == 201
    assert client.post("/hooks/testsrc/src/", json=ALERT).status_code == 202
    return api.get("/api/incidents").json["items"][0]["id"]


# Each case: method, path, JSON body, the field named (None: a 404 for the path itself),
# and the same request made valid, with the status it answers.
CASES = [
    ("GET", "/api/sources/a%00b", None, None, "/api/sources/team", None, 200),
    ("PATCH", "/api/sources/a%00b", {"enabled": False}, None, "/api/sources/team", {"enabled": False}, 200),
    ("GET", "/api/sources/a%00b/handshakes", None, None, "/api/sources/team/handshakes", None, 200),
    ("PATCH", "/api/sources/team", {"name": "a\x00b"}, "name", "/api/sources/team", {"name": "ab"}, 200),
    ("PATCH", "/api/sources/team", {"name": "n" * (NAME_MAX + 1)}, "name",
     "/api/sources/team", {"name": "n" * NAME_MAX}, 200),
    ("GET", "/api/events?source=a%00b", None, "source", "/api/events?source=src", None, 200),
    ("GET", "/api/events?external_id=%00", None, "external_id", "/api/events?external_id=evt-1", None, 200),
    ("GET", "/api/incidents?q=%00", None, "q", "/api/incidents?q=disk", None, 200),
    ("GET", "/api/incidents?source=%00", None, "source", "/api/incidents?source=src", None, 200),
    ("GET", "/api/deliveries?sink=%00", None, "sink", "/api/deliveries?sink=itms", None, 200),
    ("POST", "/api/sources", {"type": "whatap", "name": "a\x00b"}, "name",
     "/api/sources", {"type": "whatap", "name": "ab"}, 201),
    ("POST", "/api/sources", {"type": "whatap", "name": "n" * (NAME_MAX + 1)}, "name",
     "/api/sources", {"type": "whatap", "name": "n" * NAME_MAX}, 201),
    ("POST", "/api/sources", {"key": ["team"], "type": "testsrc"}, "key",
     "/api/sources", {"key": "team2", "type": "testsrc"}, 201),
    ("POST", "/api/incidents/{incident}/comments", {"body": "a\x00b"}, "body",
     "/api/incidents/{incident}/comments", {"body": "ab"}, 201),
    ("POST", "/api/incidents/{incident}/acknowledge", {"note": "a\x00b"}, "note",
     "/api/incidents/{incident}/acknowledge", {"note": "ab"}, 200),
    ("POST", "/api/deliveries/retry", {"sink": "a\x00b"}, "sink",
     "/api/deliveries/retry", {"sink": "itms"}, 200),
]


def send(api, method: str, path: str, body):
    """json.dumps escapes what the test client could not encode itself: an unpaired surrogate."""
    return api.open(path, method=method, data=None if body is None else json.dumps(body),
                    content_type="application/json")


def state(api, incident, incident_id: int) -> tuple:
    """What the cases could change: the source ``team``, the incident (with its timeline) and
    the deliveries; the number of sources is compared on its own."""
    return api.get("/api/sources/team").json, incident(incident_id), api.get("/api/deliveries").json


def read_back(api, incident, incident_id: int, valid, field: str):
    """Where a valid request's text shows later: the name on the source it made or changed,
    a comment's body or an acknowledgement's note on the incident's newest timeline entry."""
    if field == "name":
        return api.get(f"/api/sources/{valid.json['key']}").json["name"]
    return incident(incident_id)["timeline"][-1][field]


@pytest.mark.parametrize("method, path, body, field, valid_path, valid_body, valid_status", CASES)
def test_bad_input_is_a_4xx_json_error_and_the_valid_request_works(
        method, path, body, field, valid_path, valid_body, valid_status, api, seeded, incident):
    sources_before = api.get("/api/sources").json["total"]
    before = state(api, incident, seeded)

    response = send(api, method, path.format(incident=seeded), body)

    assert response.status_code == (404 if field is None else 422), response.get_data(as_text=True)
    error = response.json["error"]
    assert error["code"] == ("not_found" if field is None else "invalid_request") and error["message"]
    if field is not None:
        assert list(error["fields"]) == [field]
    assert api.get("/api/sources").json["total"] == sources_before
    assert state(api, incident, seeded) == before

    valid = send(api, method, valid_path.format(incident=seeded), valid_body)
    assert valid.status_code == valid_status, valid.json
    for text in {"name", "body", "note"} & set(valid_body or ()):
        assert read_back(api, incident, seeded, valid, text) == valid_body[text]
        if text in valid.json:  # echoed in the answer too (an acknowledgement answers the incident)
            assert valid.json[text] == valid_body[text]


@pytest.mark.parametrize("error, status, code", [
    (DataError("SELECT sql_text", {"key": "param_value"}, Exception("value too long\nDETAIL: more")),
     422, "invalid_value"),
    (OperationalError("SELECT sql_text", {"key": "param_value"}, Exception("connection refused")),
     503, "unavailable"),
])
def test_a_data_error_past_validation_is_422_and_a_database_failure_503(
        error, status, code, api, seeded, monkeypatch):
    def fail(key):
        raise error

    monkeypatch.setattr(api.application.extensions["gateway"].runtime.sources, "stored", fail)
    response = api.get("/api/sources/team")
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    message = response.json["error"]["message"]
    assert not [leak for leak in ("sql_text", "param_value", "DETAIL") if leak in message], message


# Bodies that are no JSON object a column could hold, each sent raw, to an endpoint that reads one.
UNREADABLE_BODIES = {
    "nested too deeply": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "an escaped surrogate in a value": (b'{"body": "a\\ud800"}', "surrogate"),
    "an escaped surrogate as a field name": (b'{"body": "ok", "\\udc00": 1}', "surrogate"),
    "a surrogate's raw bytes": (b'{"body": "a\xed\xa0\x80"}', "surrogate"),
    "a surrogate nested deep": (b'{"body": "ok", "x": ' + b"[" * 480 + b'"\\ud800"' + b"]" * 480 + b"}", "surrogate"),
    "NaN": (b'{"body": NaN}', "NaN is not a JSON number"),
    "a number beyond a float": (b'{"body": 1e400}', "beyond a float"),
}


@pytest.mark.parametrize("body, says", UNREADABLE_BODIES.values(), ids=UNREADABLE_BODIES.keys())
def test_a_body_no_column_could_hold_is_400_and_changes_nothing(api, seeded, incident, body, says):
    path = f"/api/incidents/{seeded}/comments"
    before = incident(seeded)
    response = api.post(path, data=body, content_type="application/json")
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_json"), response.data
    assert says in response.json["error"]["message"]
    assert incident(seeded) == before  # its timeline included
    assert api.post(path, json={"body": "a \U0001f600"}).status_code == 201


def test_a_source_option_holding_a_surrogate_is_refused_before_it_is_stored(api, seeded):
    total = api.get("/api/sources").json["total"]
    response = api.post("/api/sources", data=b'{"key": "k7", "type": "testsrc", "token": "\\ud800"}',
                        content_type="application/json")
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_json")
    assert api.get("/api/sources/k7").status_code == 404
    after = api.get("/api/sources")
    assert (after.status_code, after.json["total"]) == (200, total)


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/incidents/2147483648"),
    ("POST", "/api/incidents/9223372036854775808/acknowledge"),
    ("GET", "/api/events/9223372036854775808/raw"),
    ("GET", "/api/deliveries/2147483648"),
    ("POST", "/api/deliveries/99999999999999999999999/retry"),
    ("GET", "/api/sources//handshakes"),
])
def test_an_id_no_row_can_have_is_404_on_both_databases(api, seeded, method, path):
    response = api.open(path, method=method)
    assert response.status_code == 404 and response.mimetype == "application/json", response.data


def test_a_page_beyond_any_list_is_422_naming_page(api):
    response = api.get("/api/incidents", query_string={"page": str(2**62)})
    assert (response.status_code, list(response.json["error"]["fields"])) == (422, ["page"])


def test_an_api_body_past_the_limit_is_413_declared_or_not(api, seeded):
    from gateway.web.common import MAX_API_BODY

    comment = json.dumps({"body": "x" * MAX_API_BODY}).encode()
    declared = api.post(f"/api/incidents/{seeded}/comments", data=comment, content_type="application/json")
    streamed = api.post(f"/api/incidents/{seeded}/comments", input_stream=iter_stream(comment),
                        content_type="application/json")
    for response in (declared, streamed):
        assert (response.status_code, response.json["error"]["code"]) == (413, "body_too_large")
    assert api.post(f"/api/incidents/{seeded}/comments", json={"body": "x" * 1000}).status_code == 201


def iter_stream(data: bytes):
    """A body without Content-Length, as a chunked request reaches the application."""
    import io

    return io.BytesIO(data)


@pytest.mark.parametrize("key", [".", ".."])
def test_a_source_key_a_url_cannot_carry_is_refused(api, key):
    """``/hooks/testsrc/../`` is no URL of a source: clients collapse dot segments."""
    response = api.post("/api/sources", json={"key": key, "type": "testsrc"})
    assert (response.status_code, list(response.json["error"]["fields"])) == (422, ["key"])
    assert api.post("/api/sources", json={"key": "..a.", "type": "testsrc"}).status_code == 201
