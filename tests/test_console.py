"""The console's users, roles, sign-in, CSRF and tokens, through the Flask test client on both databases.

The browser journeys (tests/test_console_browser.py) drive the same pages in Chromium; these
cover the rules a browser cannot show quickly: every refusal, and that it changed nothing.
"""
from __future__ import annotations

import html
import json
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from gateway import users
from gateway.cli import main as cli
from gateway.store.models import SEVERITY_RANK
from gateway.web.console import secret_key
from testkit.support import csrf_of, sign_in

ALERT = {"id": "evt-1", "title": "disk full", "severity": "critical", "resource": "db-1"}


@pytest.fixture
def engine(app):
    return app.extensions["gateway"].engine


@pytest.fixture
def incident_id(client, api) -> int:
    assert client.post("/hooks/testsrc/src/", json=ALERT).status_code == 202
    return api.get("/api/incidents").json["items"][0]["id"]


def test_every_page_sends_the_signed_out_to_login(client, incident_id):
    for path in ("/", "/incidents", f"/incidents/{incident_id}", "/sources", "/deliveries", "/settings"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.location.startswith("/login?next="), path
    assert client.get("/login").status_code == 200


def test_operator_acts_and_the_timeline_names_them(app, engine, incident, incident_id):
    browser = sign_in(app, engine, "kim", "operator")
    page = browser.get(f"/incidents/{incident_id}")
    assert 'class="action-acknowledge"' in page.text and "disable" not in page.text.split("action-acknowledge")[1][:20]
    token = csrf_of(page)
    assert browser.post(f"/incidents/{incident_id}/acknowledge", data={"csrf_token": token}).status_code == 302
    assert browser.post(f"/incidents/{incident_id}/comments",
                        data={"csrf_token": token, "body": "looking at db-1"}).status_code == 302
    timeline = incident(incident_id)["timeline"]
    assert [(e["kind"], e["actor"]) for e in timeline[-2:]] == [("status_changed", "kim"), ("commented", "kim")]
    # A transition the status does not allow is refused, as on the API.
    assert browser.post(f"/incidents/{incident_id}/close", data={"csrf_token": token}).status_code == 409


def test_a_viewer_reads_but_every_action_is_403(app, engine, incident, incident_id, api):
    browser = sign_in(app, engine, "lee", "viewer")
    page = browser.get(f"/incidents/{incident_id}")
    assert page.status_code == 200 and "disk full" in page.text
    assert all("disabled" in button for button in re.findall(r"<button type=\"submit\" class=\"action-[^>]*>", page.text))
    token = csrf_of(page)
    for path, data in ((f"/incidents/{incident_id}/acknowledge", {}), (f"/incidents/{incident_id}/comments",
                                                                        {"body": "x"}),
                       ("/sources", {"type": "testsrc", "name": "x"}), ("/settings/users",
                                                                        {"name": "eve", "role": "admin",
                                                                         "password": "longenough"}),
                       ("/deliveries/retry", {"sink": "itms"}), ("/settings/reload", {})):
        assert browser.post(path, data={"csrf_token": token, **data}).status_code == 403, path
    assert incident(incident_id)["status"] == "triggered" and len(incident(incident_id)["timeline"]) == 1
    assert [s["name"] for s in api.get("/api/sources").json["items"]] == ["src"]
    assert [u.name for u in users.list_users(engine)] == ["lee"]


def test_a_post_without_csrf_token_is_400_and_changes_nothing(app, engine, incident, incident_id):
    browser = sign_in(app, engine, "kim", "admin")
    for path, data in ((f"/incidents/{incident_id}/acknowledge", {}),
                       (f"/incidents/{incident_id}/comments", {"body": "x"}),
                       ("/settings/users", {"name": "eve", "role": "admin", "password": "longenough"})):
        assert browser.post(path, data=data).status_code == 400, path
        assert browser.post(path, data={**data, "csrf_token": "forged"}).status_code == 400, path
    assert incident(incident_id)["status"] == "triggered" and len(incident(incident_id)["timeline"]) == 1
    assert [u.name for u in users.list_users(engine)] == ["kim"]
    assert app.test_client().post("/login", data={"username": "kim", "password": "kim-password"}).status_code == 400


def test_wrong_passwords_are_401_then_429_past_ten(app, engine):
    users.create_user(engine, "kim", "operator", "right-password")
    browser = app.test_client()
    token = csrf_of(browser.get("/login"))
    for _ in range(users.MAX_FAILURES):
        assert browser.post("/login", data={"username": "kim", "password": "wrong", "csrf_token": token}).status_code == 401
    # Even the right password waits now: the name is under attack.
    blocked = browser.post("/login", data={"username": "kim", "password": "right-password", "csrf_token": token})
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "300"
    other = browser.post("/login", data={"username": "lee", "password": "wrong", "csrf_token": token})
    assert other.status_code == 401


def test_a_disabled_user_is_signed_out_at_once(app, engine):
    browser = sign_in(app, engine, "kim", "operator")
    assert browser.get("/incidents").status_code == 200
    users.set_enabled(engine, "kim", False)
    assert browser.get("/incidents").status_code == 302


def test_personal_tokens_act_as_their_user_with_their_role(app, engine, incident, incident_id):
    users.create_user(engine, "kim", "operator", "kim-password")
    users.create_user(engine, "lee", "viewer", "lee-password")
    operator_token = users.create_token(engine, "kim", "laptop")
    viewer_token = users.create_token(engine, "lee", "laptop")
    as_kim = {"Authorization": f"Bearer {operator_token}"}
    as_lee = {"Authorization": f"Bearer {viewer_token}"}
    api = app.test_client()
    assert api.get("/api/incidents", headers=as_lee).status_code == 200
    refused = api.post(f"/api/incidents/{incident_id}/acknowledge", headers=as_lee, json={})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert api.post(f"/api/incidents/{incident_id}/acknowledge", headers=as_kim, json={}).status_code == 200
    assert api.post("/api/sources", headers=as_kim, json={"type": "testsrc"}).status_code == 403
    assert incident(incident_id)["timeline"][-1]["actor"] == "kim"
    # The service token is still "admin"; a revoked token and a disabled user's token are refused.
    [kim_token] = users.list_tokens(engine, users.list_users(engine)[0].id)
    assert users.revoke_token(engine, kim_token.id)
    assert api.get("/api/incidents", headers=as_kim).status_code == 401
    users.set_enabled(engine, "lee", False)
    assert api.get("/api/incidents", headers=as_lee).status_code == 401
    # Only the hash is stored.
    with engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM api_tokens")]
    assert operator_token not in stored and viewer_token not in stored


def test_the_api_never_takes_the_session_cookie(app, engine, incident_id):
    browser = sign_in(app, engine, "kim", "admin")
    assert browser.get("/api/incidents").status_code == 401


def test_cookie_flags_and_csp(app, engine, make_app):
    browser = app.test_client()
    page = browser.get("/login")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"] and "unsafe-inline" not in page.text
    users.create_user(engine, "kim", "admin", "kim-password")
    answer = browser.post("/login", data={"username": "kim", "password": "kim-password", "csrf_token": csrf_of(page)})
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    https = make_app("""
global:
  external_url: https://gateway.example.test
sources: []
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
""")
    assert https.config["SESSION_COOKIE_SECURE"] is True


def test_a_script_title_is_text(app, engine, client):
    assert client.post("/hooks/testsrc/src/", json={**ALERT, "title": "<script>alert(1)</script>"}).status_code == 202
    browser = sign_in(app, engine, "kim", "viewer")
    listing = browser.get("/incidents").text
    assert "<script>alert(1)" not in listing and "&lt;script&gt;alert(1)&lt;/script&gt;" in listing


def test_sources_page_creates_a_source_and_shows_its_token_once(app, engine, client):
    browser = sign_in(app, engine, "kim", "admin")
    page = browser.get("/sources?new=1")
    answer = browser.post("/sources", data={"csrf_token": csrf_of(page), "type": "testsrc", "name": "팀 소스",
                                            "token": "s3cret-token"})
    assert answer.status_code == 302
    shown = browser.get("/sources").text
    assert "s3cret-token" in shown and "팀 소스" in shown
    assert "s3cret-token" not in browser.get("/sources").text
    url = re.findall(r'class="webhook-url">http://localhost(/hooks/testsrc/[^<]+)<', shown)[-1]
    assert client.post(url, json=ALERT, headers={"X-Test-Token": "s3cret-token"}).status_code == 202
    assert client.post(url, json=ALERT, headers={"X-Test-Token": "wrong"}).status_code == 401


def test_language_comes_from_user_then_browser_then_config(app, engine):
    browser = app.test_client()
    assert "사용자 이름" in browser.get("/login").text  # shipped default: ko
    assert "Username" in browser.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"}).text
    signed_in = sign_in(app, engine, "kim", "viewer")
    page = signed_in.get("/settings", headers={"Accept-Language": "en"})
    assert "Webhook sources" in page.text
    signed_in.post("/settings/preferences", data={"csrf_token": csrf_of(page), "language": "ko",
                                                   "timezone": "Asia/Seoul"})
    assert "웹훅 소스 관리" in signed_in.get("/settings", headers={"Accept-Language": "en"}).text


def test_times_show_in_the_viewers_zone(app, engine, incident, incident_id):
    """The incident page's times, the timeline's included, in the zone the viewer chose, else the config's."""
    created = datetime.fromisoformat(incident(incident_id)["timeline"][0]["at"])
    shown = lambda browser, zone: browser.get(f"/incidents/{incident_id}").text.count(  # noqa: E731
        created.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z"))
    browser = sign_in(app, engine, "kim", "viewer")
    assert shown(browser, "Asia/Seoul") >= 2  # first seen and the "created" entry; the config's default zone
    page = browser.get("/settings")
    browser.post("/settings/preferences", data={"csrf_token": csrf_of(page), "timezone": "America/New_York"})
    assert (shown(browser, "America/New_York") >= 2, shown(browser, "Asia/Seoul")) == (True, 0)


def test_the_secret_key_is_made_once_and_kept(tmp_path):
    path = str(tmp_path / "instance" / "secret_key")
    first = secret_key(path)
    assert len(first) >= 32 and secret_key(path) == first
    assert (tmp_path / "instance" / "secret_key").stat().st_mode & 0o077 == 0


def test_users_cli(database_url, monkeypatch):
    monkeypatch.setenv("GATEWAY_DATABASE_URL", database_url)
    run = CliRunner().invoke
    created = run(cli, ["users", "create", "kim", "--role", "operator", "--password-stdin"], input="kim-password\n")
    assert created.exit_code == 0, created.output
    assert run(cli, ["users", "create", "kim", "--role", "admin", "--password-stdin"], input="x" * 9).exit_code == 1
    assert run(cli, ["users", "set-role", "kim", "admin"]).exit_code == 0
    token = run(cli, ["users", "token", "kim"]).output.strip().splitlines()[-1]
    assert token.startswith(users.TOKEN_PREFIX)
    assert run(cli, ["users", "disable", "kim"]).exit_code == 0
    assert run(cli, ["users", "list"]).output == "kim\tadmin\tdisabled\n"
    assert run(cli, ["users", "set-role", "nobody", "admin"]).exit_code == 1


def test_first_run_creates_admin_once(engine):
    password = users.create_first_admin(engine)
    assert password and users.authenticate(engine, "admin", password).role == "admin"
    assert users.create_first_admin(engine) is None


def test_a_sources_page_tells_why_requests_were_refused(make_app):
    users_app = make_app("""
sources:
  - {key: src, type: testsrc, token: right-token}
  - {key: off, type: testsrc, enabled: false}
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
""")
    hooks = users_app.test_client()
    assert hooks.post("/hooks/testsrc/src/", json=ALERT, headers={"X-Test-Token": "wrong"}).status_code == 401
    assert hooks.post("/hooks/testsrc/src/", json={"id": "e2"}, headers={"X-Test-Token": "right-token"}).status_code == 422
    assert hooks.post("/hooks/testsrc/src/", json=ALERT, headers={"X-Test-Token": "right-token"}).status_code == 202
    assert hooks.post("/hooks/testsrc/off/", json=ALERT).status_code == 403
    assert hooks.post("/hooks/testsrc/nobody/", json=ALERT).status_code == 404  # no source: nothing to show it on
    browser = sign_in(users_app, users_app.extensions["gateway"].engine, "kim", "viewer")
    page = browser.get("/sources/src").text
    rows = re.findall(r'<tr class="(accepted|refused)">', page)
    assert rows == ["accepted", "refused", "refused"]
    assert "wrong or missing X-Test-Token" in page and "title (missing)" in page
    assert "source_disabled" in browser.get("/sources/off").text
    listing = browser.get("/sources").text
    assert re.search(r'href="/sources/src" class="error">2</a>', listing)
    two = {"alerts": [{"id": "e3", "title": "disk"}, {"id": "e4", "title": "load"}]}
    assert hooks.post("/hooks/testsrc/src/", json=two, headers={"X-Test-Token": "right-token"}).status_code == 202
    counts = lambda language: re.findall(r'badge ok">[^<]*</span></td><td>([^<]*)</td>', browser.get(  # noqa: E731
        "/sources/src", headers={"Accept-Language": language}).text)
    assert counts("en") == ["2 alerts", "1 alert"] and counts("ko") == ["알림 2건", "알림 1건"]


def test_an_incident_page_shows_what_its_fingerprint_is_made_from(make_app):
    whatap_app = make_app("""
sources:
  - {key: wt, type: whatap}
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
""")
    sample = Path(__file__).parents[1] / "plugins/whatap/gateway_whatap/samples/critical.json"
    payload = json.loads(sample.read_text())
    assert whatap_app.test_client().post("/hooks/whatap/wt/", json=payload).status_code == 202
    browser = sign_in(whatap_app, whatap_app.extensions["gateway"].engine, "kim", "viewer")
    page = browser.get("/incidents/1").text
    made_from = re.search(r'<div class="muted" id="fingerprint-fields">(.*?)</div>', page, re.S).group(1)
    shown = dict(re.findall(r'<span class="badge label">([^=<]+)=([^<]*)</span>', made_from))
    assert shown == {"pcode": str(payload["pcode"]), "oid": str(payload["oid"]),
                     "metric_name": payload["metricName"], "title": payload["title"]}


def test_settings_reload_shows_a_broken_config_and_keeps_the_old_one(make_app):
    app = make_app("""
sources:
  - {key: src, type: testsrc, token: never-shown-secret}
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
""")
    browser = sign_in(app, app.extensions["gateway"].engine, "kim", "admin")
    page = browser.get("/settings", headers={"Accept-Language": "en"})
    assert 'id="all-workers">every worker: last reload succeeded' in page.text
    assert "never-shown-secret" not in page.text and "&#34;***&#34;" in page.text  # the running config, redacted
    config_path = app.config["CONFIG"]
    good = open(config_path, encoding="utf-8").read()
    with open(config_path, "w", encoding="utf-8") as file:
        file.write("route: [\n")
    try:
        assert browser.post("/settings/reload", data={"csrf_token": csrf_of(page)}).status_code == 302
        failed = browser.get("/settings", headers={"Accept-Language": "en"}).text
        assert "last reload failed" in failed and 'id="all-workers">at least one worker' in failed
        assert app.extensions["gateway"].runtime.snapshot.config.sources  # the old config stays
    finally:
        with open(config_path, "w", encoding="utf-8") as file:
            file.write(good)
        app.extensions["gateway"].runtime.reload()


def test_status_tabs_count_up_to_the_cap(app, engine, client, monkeypatch):
    for n in range(3):
        assert client.post("/hooks/testsrc/src/", json={**ALERT, "id": f"evt-{n}", "title": f"disk {n}"}).status_code == 202
    browser = sign_in(app, engine, "kim", "viewer")
    counts = lambda: dict(re.findall(r'data-status="(\w+)">[^<]*<span class="count">([^<]*)</span>',  # noqa: E731
                                     browser.get("/incidents").text))
    assert counts() == {"triggered": "3", "acknowledged": "0", "resolved": "0", "closed": "0"}
    monkeypatch.setattr("gateway.web.common.COUNT_CAP", 2)  # where the count stops
    monkeypatch.setattr("gateway.incidents.console.COUNT_CAP", 2)  # what the page says it stopped at
    assert counts() == {"triggered": "2+", "acknowledged": "0", "resolved": "0", "closed": "0"}


@pytest.mark.parametrize("sort", ["-created_at", "-last_event_at", "severity", "-event_count"])
def test_next_and_previous_walk_the_list_without_gaps_or_repeats(app, engine, client, monkeypatch, sort):
    """Every sort pages by cursor: Next to the end and Previous back to page 1 show every incident
    once, in the list's order, across ties and (by severity) across the rank's steps."""
    severities = ["warning", "critical", "critical", "info", "warning", "critical", "warning", "critical"]
    for n, severity in enumerate(severities):
        assert client.post("/hooks/testsrc/src/", json={
            **ALERT, "id": f"evt-{n}", "title": f"disk {n}", "severity": severity}).status_code == 202
    monkeypatch.setattr("gateway.incidents.console.PER_PAGE", 3)
    browser = sign_in(app, engine, "kim", "viewer")

    def visit(path: str):
        text = browser.get(path, headers={"Accept-Language": "en"}).text
        links = {rel: html.unescape(href) for rel, href in re.findall(r'<a rel="(prev|next)" href="([^"]+)"', text)}
        return re.findall(r'<tr data-incident="(\d+)">', text), re.search(r"Page (\d+)", text).group(1), links

    whole = [str(n) for n in range(8, 0, -1)]  # one event each: the count's ties go newest first too
    if sort == "severity":
        whole.sort(key=lambda n: SEVERITY_RANK[severities[int(n) - 1]])  # stable: newest first within each
    forward, path = [], f"/incidents?sort={sort}"
    while path:
        ids, number, links = visit(path)
        forward.append((number, ids))
        assert "cursor=" in links.get("next", "cursor=")
        path = links.get("next")
    assert forward == [("1", whole[:3]), ("2", whole[3:6]), ("3", whole[6:])]
    backward, path = [], links["prev"]
    while path:
        ids, number, links = visit(path)
        backward.append((number, ids))
        path = links.get("prev")
    assert backward == [("2", whole[3:6]), ("1", whole[:3])]


def test_a_hand_edited_cursor_goes_back_to_the_list(app, engine, client):
    browser = sign_in(app, engine, "kim", "viewer")
    answer = browser.get("/incidents?status=resolved&cursor=not-a-cursor")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/incidents?status=resolved&sort=-created_at")
