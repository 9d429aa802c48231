"""Refused webhook requests are kept, per source and bounded, listed with the accepted ones."""
from __future__ import annotations

import json
import logging
import re
from datetime import timedelta

import pytest
import testkit
from gateway.testing import migrated_schema
from sqlalchemy import create_engine, select, text, update
from testkit.support import ADMIN_TOKEN, admin_client, sign_in

from gateway.app import create_app
from gateway.store.db import upgrade
from gateway.store.models import RawRequest, RefusedRequest, utcnow
from gateway.web import console

CONFIG = """
global:
  keep_refused: {keep}
sources:
  - key: src
    type: testsrc
    token: s3cret
  - key: off
    type: testsrc
    enabled: false
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""
AUTH = {"X-Test-Token": "s3cret"}


def requests_of(api, key: str, **query) -> dict:
    response = api.get(f"/api/sources/{key}/requests", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def test_each_refusal_is_kept_with_its_status_code_and_message(make_app):
    app = make_app(CONFIG.format(keep=1000))
    client, api = app.test_client(), admin_client(app)
    assert client.post("/hooks/testsrc/src/", json={"id": "1", "title": "t"}, headers=AUTH).status_code == 202
    refusals = [
        (client.post("/hooks/testsrc/src/", json={"id": "2", "title": "t"},
                     headers={"X-Test-Token": "wrong", "Authorization": "Bearer vendor-secret"}), 401, "unauthorized"),
        (client.post("/hooks/testsrc/src/", data=b"{not json", headers=AUTH), 400, "invalid_json"),
        (client.post("/hooks/testsrc/src/", json={"id": "3"}, headers=AUTH), 422, "invalid_payload"),
        (client.post("/hooks/testsrc/src/", json={"crash": True}, headers=AUTH), 422, "unprocessable_payload"),
        (client.post("/hooks/testsrc/src/", data=b"x" * (1024 * 1024 + 1), headers=AUTH), 413, "body_too_large"),
        (client.get("/hooks/testsrc/src/"), 405, "method_not_allowed"),
    ]
    for response, status, code in refusals:
        assert (response.status_code, response.json["error"]["code"]) == (status, code)

    listed = requests_of(api, "src", outcome="refused")
    assert listed["total"] == len(refusals)
    newest_first = list(reversed(refusals))
    assert [(item["status"], item["code"], item["outcome"]) for item in listed["items"]] == [
        (status, code, "refused") for _, status, code in newest_first]
    assert [item["message"] for item in listed["items"]] == [r.json["error"]["message"] for r, _, _ in newest_first]
    unauthorized = listed["items"][-1]
    raw = api.get(unauthorized["raw_url"])
    assert (raw.status_code, json.loads(raw.data)) == (200, {"id": "2", "title": "t"})
    with app.extensions["gateway"].engine.connect() as conn:
        kept = conn.execute(select(RefusedRequest.__table__).where(RefusedRequest.id == unauthorized["id"])).one()
    assert kept.headers["authorization"] == "[redacted]"  # as the raw journal keeps it
    assert (kept.verified, kept.status) == (False, 401)
    assert api.get(listed["items"][0]["raw_url"]).data == b""  # the 405: no body was read

    both = requests_of(api, "src")
    assert both["total"] == len(refusals) + 1
    assert [item["outcome"] for item in both["items"]] == ["refused"] * len(refusals) + ["accepted"]
    assert requests_of(api, "src", outcome="accepted")["items"] == [both["items"][-1]]
    assert both["items"][-1]["status"] == 202 and both["items"][-1]["raw_url"].startswith("/api/events/")
    assert api.get("/api/sources/src/requests?outcome=lost").status_code == 422


def test_a_disabled_source_keeps_its_refusals_an_unknown_one_has_none(make_app):
    app = make_app(CONFIG.format(keep=1000))
    client, api = app.test_client(), admin_client(app)
    assert client.post("/hooks/testsrc/off/", json={"id": "1", "title": "t"}).status_code == 403
    assert client.post("/hooks/testsrc/nope/", json={"id": "1", "title": "t"}).status_code == 404
    assert client.post("/hooks/whatap/src/", json={"id": "1", "title": "t"}).status_code == 404  # not its type
    assert [item["code"] for item in requests_of(api, "off")["items"]] == ["source_disabled"]
    assert requests_of(api, "nope")["total"] == 0
    assert requests_of(api, "src")["total"] == 0
    metrics = client.get("/metrics").data.decode()
    assert 'gateway_webhooks_rejected_total{reason="unknown_source",source="unknown"}' in metrics


def test_only_the_newest_refusals_of_each_source_are_kept(make_app):
    app = make_app(CONFIG.format(keep=3))
    client, api = app.test_client(), admin_client(app)
    for n in range(5):
        assert client.post("/hooks/testsrc/src/", json={"id": str(n)}, headers=AUTH).status_code == 422
    assert client.post("/hooks/testsrc/off/", json={}).status_code == 403
    listed = requests_of(api, "src", outcome="refused")
    assert listed["total"] == 3
    assert [json.loads(api.get(item["raw_url"]).data)["id"] for item in listed["items"]] == ["4", "3", "2"]
    assert requests_of(api, "off")["total"] == 1  # another source's bound is its own


def _received(app, table, ids_ages: dict[int, timedelta]) -> None:
    """Move rows of ``table`` back in time: each id to ``ages`` before now."""
    with app.extensions["gateway"].engine.begin() as conn:
        for row_id, age in ids_ages.items():
            conn.execute(update(table).where(table.id == row_id).values(received_at=utcnow() - age))


def test_a_sources_requests_page_through_both_outcomes_in_the_order_received(make_app):
    app = make_app(CONFIG.format(keep=1000))
    client, api = app.test_client(), admin_client(app)
    for n in range(5):
        assert client.post("/hooks/testsrc/src/", json={"id": f"a{n}", "title": "t"}, headers=AUTH).status_code == 202
        assert client.post("/hooks/testsrc/src/", json={"id": f"r{n}"}, headers=AUTH).status_code == 422
    accepted = [item["id"] for item in requests_of(api, "src", outcome="accepted")["items"]]
    refused = [item["id"] for item in requests_of(api, "src", outcome="refused")["items"]]
    # Received in another order than stored: ids alone would list them wrongly.
    _received(app, RawRequest, {row_id: timedelta(minutes=3 * n) for n, row_id in enumerate(sorted(accepted))})
    _received(app, RefusedRequest, {row_id: timedelta(minutes=3 * n + 1) for n, row_id in enumerate(refused)})

    whole = requests_of(api, "src", per_page=100)
    assert whole["total"] == 10
    received = [item["received_at"] for item in whole["items"]]
    assert received == sorted(received, reverse=True)
    assert [item["outcome"] for item in whole["items"][:2]] == ["accepted", "refused"]
    paged = [requests_of(api, "src", per_page=3, page=page) for page in range(1, 5)]
    assert [item for page in paged for item in page["items"]] == whole["items"]
    assert {page["total"] for page in paged} == {10}
    assert [item["id"] for item in requests_of(api, "src", outcome="accepted", per_page=2, page=2)["items"]] == \
        sorted(accepted)[2:4]


@pytest.mark.parametrize("silent, shown", [(2, "2 days ago"), (30, "1 month ago"), (100, "3 months ago")])
def test_the_sources_page_counts_each_sources_last_day_up_to_the_cap(make_app, monkeypatch, silent, shown):
    monkeypatch.setattr(console, "COUNT_CAP", 3)
    app = make_app(CONFIG.format(keep=1000))
    client = app.test_client()
    for n in range(5):
        assert client.post("/hooks/testsrc/src/", json={"id": f"a{n}", "title": "t"}, headers=AUTH).status_code == 202
    for n in range(2):
        assert client.post("/hooks/testsrc/src/", json={"id": f"r{n}"}, headers=AUTH).status_code == 422
    assert client.post("/hooks/testsrc/off/", json={}).status_code == 403
    browser = sign_in(app, app.extensions["gateway"].engine, "kim", "viewer")
    assert browser.get("/sources").status_code == 200  # no source silent all day
    with app.extensions["gateway"].engine.connect() as conn:
        off = conn.execute(select(RefusedRequest.id).where(RefusedRequest.source_key == "off")).scalar_one()
    _received(app, RefusedRequest, {off: timedelta(days=silent)})  # silent all day: no count, yet its last request

    page = browser.get("/sources", headers={"Accept-Language": "en"}).text

    def cells(key: str) -> list[str]:
        row = re.search(rf'<tr data-source="{key}">(.*?)</tr>', page, re.S).group(1)
        return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]

    assert cells("src")[6:8] == ["3+", "2"]
    assert cells("off")[6:8] == ["0", "0"]
    assert cells("off")[5] == shown


def test_no_refusal_is_kept_when_told_to_keep_none(make_app):
    app = make_app(CONFIG.format(keep=0))
    assert app.test_client().post("/hooks/testsrc/src/", json={"id": "1"}, headers=AUTH).status_code == 422
    assert requests_of(admin_client(app), "src")["total"] == 0


def test_a_refusal_is_still_its_4xx_when_the_database_cannot_keep_it(tmp_path, write_config, caplog):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'gateway.db'}",
                      "CONFIG": write_config(CONFIG.format(keep=10)), "ADMIN_TOKEN": ADMIN_TOKEN, "TESTING": True},
                     extra_plugins=[testkit])
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="gateway.pipeline.ingest"):
        response = client.post("/hooks/testsrc/src/", json={"id": "1"}, headers={"X-Test-Token": "wrong"})
        assert (response.status_code, response.json["error"]["code"]) == (401, "unauthorized")
        assert client.post("/hooks/testsrc/off/", json={}).status_code == 403
    assert sum("could not keep a refused request" in r.getMessage() for r in caplog.records) == 2
    app.extensions["gateway"].engine.dispose()


def test_purge_removes_old_refusals_too(make_app, database_url, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from gateway.cli import main

    app = make_app(CONFIG.format(keep=10))
    client = app.test_client()
    for n in range(2):
        assert client.post("/hooks/testsrc/src/", json={"id": str(n)}, headers=AUTH).status_code == 422
    engine = app.extensions["gateway"].engine
    with engine.begin() as conn:
        oldest = conn.execute(select(RefusedRequest.id).order_by(RefusedRequest.id)).scalars().first()
        conn.execute(update(RefusedRequest).where(RefusedRequest.id == oldest)
                     .values(received_at=utcnow() - timedelta(days=10)))
    monkeypatch.syspath_prepend(str(testkit.install_testkit(tmp_path / "site")))
    result = CliRunner().invoke(main, ["purge", "--older-than", "7d"],
                                env={"GATEWAY_DATABASE_URL": database_url, "GATEWAY_CONFIG": app.config["CONFIG"]})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("purged 0 raw requests and 1 refused requests received before ")
    with engine.connect() as conn:
        assert conn.execute(select(RefusedRequest.id)).scalars().all() == [oldest + 1]


@pytest.fixture(params=["sqlite", "postgres"])
def url_at_0006(request, tmp_path):
    """A database migrated up to 0006 only, on each backend."""
    if request.param == "postgres":
        with migrated_schema("gw_refused", "0006") as url:
            yield url
        return
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url, "0006")
    yield url


def test_refusals_recorded_before_0008_keep_their_reason_as_unverified_requests_without_a_body(url_at_0006):
    engine = create_engine(url_at_0006)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO refused_requests (source_key, received_at, status, code, message, remote_addr) "
                          "VALUES ('src', :at, 401, 'unauthorized', 'no token', '10.0.0.1')"),
                     {"at": utcnow().replace(tzinfo=None)})
    upgrade(url_at_0006)
    with engine.connect() as conn:
        row = conn.execute(select(RefusedRequest.__table__)).one()
    engine.dispose()
    assert (row.code, row.body, row.headers, row.method, row.verified) == ("unauthorized", b"", {}, "POST", False)
