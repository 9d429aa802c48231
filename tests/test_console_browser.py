"""The console's journeys in a real browser (Chromium through Playwright) against a real HTTP server,
on SQLite and PostgreSQL.  One browser for the session; each test gets a fresh context.

Browser tests are mandatory in CI (``CI=true``: a missing browser fails); elsewhere they are
skipped, with the reason, when Playwright or ``/usr/bin/chromium`` is missing.
Screenshots of the pages, in Korean and English, go to ``tests/screenshots/`` (gitignored).
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from gateway import users

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).parent / "screenshots"
WHATAP = json.loads((Path(__file__).parents[1] / "plugins/whatap/gateway_whatap/samples/critical.json").read_text())


@pytest.fixture(scope="session")
def browser():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the browser tests need the PyPI package playwright (pip install -e '.[test]')"
    if missing is None and not os.path.exists(CHROMIUM):
        missing = f"the browser tests need Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(app):
    """The app on a real HTTP server on 127.0.0.1; its base URL."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()


@pytest.fixture
def app(make_app):
    return make_app("""
sources:
  - key: src
    type: testsrc
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
""")


@pytest.fixture
def open_page(browser, server, app):
    contexts = []

    def open_page(name: str, role: str, language: str = "en"):
        users.create_user(app.extensions["gateway"].engine, name, role, f"{name}-password")
        context = browser.new_context(locale=language, extra_http_headers={"Accept-Language": language},
                                      viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{server}/incidents")
        assert "/login" in page.url  # signed out: nothing but the sign-in page
        assert page.locator("nav.sidebar").count() == 0
        shot(page, f"login-{language}")
        page.fill("#username", name)
        page.fill("#password", f"{name}-password")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/incidents"))
        return page

    yield open_page
    for context in contexts:
        context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_an_operator_works_an_incident_from_the_browser(open_page, server, database_url):
    db = "pg" if database_url.startswith("postgresql") else "sqlite"
    title = "<script>window.pwned = 1; alert(1)</script> disk full"
    assert requests.post(f"{server}/hooks/testsrc/src/", json={"id": "e1", "title": title, "severity": "critical",
                                                             "resource": "db-1"}, timeout=10).status_code == 202
    for language in ("ko", "en"):
        page = open_page(f"kim-{language}", "operator", language)
        row = page.locator("tr[data-incident]", has_text="disk full")
        assert title in row.inner_text()  # shown as text ...
        assert page.evaluate("window.pwned") is None and page.dialogs == []  # ... and never run
        shot(page, f"incidents-{language}-{db}")
        if language == "ko":
            # The list refreshes itself, keeps its filters and marks what came since the last look.
            page.goto(f"{server}/incidents?severity=critical")
            assert requests.post(f"{server}/hooks/testsrc/src/", json={"id": "e2", "title": "new one",
                                                                     "severity": "critical"}, timeout=10).status_code == 202
            page.wait_for_selector("tr.new", timeout=15_000)
            assert "new one" in page.locator("tr.new").inner_text() and page.locator("tr[data-incident]").count() == 2
            assert page.locator("select[name=severity]").input_value() == "critical"
        row.locator("a.title").click()
        page.wait_for_selector("#timeline")
        shot(page, f"incident-{language}-{db}")
        if language == "ko":
            continue
        name = "kim-en"
        for button, status in (("Ack", "acknowledged"), (None, None), ("Resolve", "resolved"), ("Close", "closed")):
            if button is None:
                page.fill("#comment-body", "restarted the database")
                page.click("#add-comment button[type=submit]")
            else:
                assert page.locator(f"button:text-is('{button}')").is_enabled()
                page.click(f"button:text-is('{button}')")
            page.wait_for_load_state()
            last = page.locator("ol.timeline li").last
            assert name in last.locator(".actor").inner_text()
            if status:
                assert page.locator("#incident-status").get_attribute("class").endswith(f"status-{status}")
        kinds = page.locator("ol.timeline .kind").all_inner_texts()
        assert kinds == ["Created", "Status Changed", "Commented", "Status Changed", "Status Changed"]
        assert not any(page.locator(f"button:text-is('{b}')").is_enabled() for b in ("Ack", "Resolve", "Close"))
        shot(page, f"incident-closed-{language}-{db}")
        assert page.locator(".facts .badge.label").all_inner_texts() == [f"problem={title}"]  # the vendor's labels
        with page.expect_navigation():
            page.click("a.raw")
        assert json.loads(page.locator("#payload").inner_text())["title"] == title
        raw = page.request.get(server + page.locator("#exact-bytes").get_attribute("href"))
        assert json.loads(raw.body())["title"] == title
        shot(page, f"payload-{language}-{db}")


def test_a_viewer_cannot_act_and_forged_posts_change_nothing(open_page, server, api, database_url):
    db = "pg" if database_url.startswith("postgresql") else "sqlite"
    assert requests.post(f"{server}/hooks/testsrc/src/", json={"id": "e1", "title": "cpu high"},
                         timeout=10).status_code == 202
    page = open_page("lee", "viewer")
    page.click("a.title")
    page.wait_for_selector("#timeline")
    for button in ("Ack", "Resolve", "Close", "Add Comment"):
        assert page.locator(f"button:text-is('{button}')").is_disabled()
    incident_id = page.url.rsplit("/", 1)[-1]
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    crafted = page.request.post(f"{server}/incidents/{incident_id}/acknowledge", form={"csrf_token": token})
    assert crafted.status == 403
    without_token = page.request.post(f"{server}/incidents/{incident_id}/comments", form={"body": "x"})
    assert without_token.status == 400
    for path in ("sources", "deliveries", "settings", "plugins"):
        page.goto(f"{server}/{path}")
        shot(page, f"{path}-en-{db}")
    detail = api.get(f"/api/incidents/{incident_id}").json
    assert detail["status"] == "triggered" and [e["kind"] for e in detail["timeline"]] == ["created"]


def test_in_korean_a_new_whatap_source_takes_webhooks_with_its_token(open_page, server, database_url):
    db = "pg" if database_url.startswith("postgresql") else "sqlite"
    page = open_page("park", "admin", "ko")
    page.click("nav.sidebar >> text=웹훅 소스 관리")
    page.click("text=새 소스 추가")
    with page.expect_navigation():
        page.select_option("#type", label="WhaTap (와탭)")
    page.fill("#name", "와탭 실운영 환경")
    page.fill("#token", "whatap-secret-1")
    shot(page, f"new-source-ko-{db}")
    page.click("button:text-is('생성')")
    page.wait_for_selector("#shown-token")
    assert page.locator("#new-token").inner_text() == "whatap-secret-1"
    row = page.locator("tr", has_text="와탭 실운영 환경")
    url = row.locator(".webhook-url").inner_text()
    assert re.fullmatch(rf"{server}/hooks/whatap/[^/]+/", url)
    shot(page, f"sources-ko-{db}")
    assert requests.post(url, json=WHATAP, headers={"X-Webhook-Token": "wrong"}, timeout=10).status_code == 401
    assert requests.post(url, json=WHATAP, headers={"X-Webhook-Token": "whatap-secret-1"},
                         timeout=10).status_code == 202
    page.reload()
    assert page.locator("#shown-token").count() == 0  # the secret is shown once
    page.click("text=와탭 실운영 환경")
    refused = page.locator("#requests tr.refused")
    assert refused.count() == 1 and "invalid_token" in refused.inner_text()
    assert page.locator("#requests tr.accepted").count() == 1
    shot(page, f"source-ko-{db}")
    page.go_back()
    page.click("nav.sidebar >> text=인시던트 관리")
    assert page.locator("tr[data-incident]").count() == 1
    for path in ("deliveries", "settings", "plugins"):
        page.goto(f"{server}/{path}")
        shot(page, f"{path}-ko-{db}")


@pytest.mark.parametrize("language", ["ko", "en"])
def test_next_and_previous_page_through_the_list_in_chromium(open_page, app, monkeypatch, language):
    """The pager's links, clicked: each page by cursor, back to the first, in both languages."""
    client = app.test_client()
    for n in range(7):
        assert client.post("/hooks/testsrc/src/", json={"id": f"p{n}", "title": f"disk {n}"}).status_code == 202
    monkeypatch.setattr("gateway.incidents.console.PER_PAGE", 3)
    page = open_page(f"pager-{language}", "viewer", language)
    shown = lambda: page.locator("tr[data-incident]").evaluate_all("rows => rows.map(r => r.dataset.incident)")  # noqa: E731
    first = shown()
    assert len(first) == 3 and page.locator("a[rel=prev]").count() == 0
    page.click("a[rel=next]")
    second = shown()
    page.click("a[rel=next]")
    third = shown()
    shot(page, f"incident-list-page-3-{language}")
    assert page.locator("a[rel=next]").count() == 0 and "cursor=" in page.url
    assert first + second + third == [str(n) for n in range(7, 0, -1)]
    page.click("a[rel=prev]")
    assert shown() == second
    page.click("a[rel=prev]")
    assert shown() == first and page.locator("a[rel=prev]").count() == 0


def test_the_filter_form_sorts_and_searches_with_every_severity_and_source(open_page, app, database_url):
    """The form sends its "All" choices as empty fields: the list is then unfiltered by them, in the
    sort and search chosen (an empty severity once reset the whole form to the default list)."""
    db = "pg" if database_url.startswith("postgresql") else "sqlite"
    client = app.test_client()
    for n, (severity, repeats) in enumerate([("warning", 3), ("critical", 1), ("info", 5), ("critical", 2)]):
        for r in range(repeats):
            assert client.post("/hooks/testsrc/src/", json={"id": f"f{n}-{r}", "title": f"disk {n}",
                                                            "severity": severity}).status_code == 202
    for language in ("ko", "en"):
        page = open_page(f"form-{language}", "viewer", language)
        shown = lambda: page.locator("tr[data-incident]").evaluate_all("rows => rows.map(r => r.dataset.incident)")  # noqa: E731
        for sort, expected in (("severity", ["4", "2", "1", "3"]), ("-event_count", ["3", "1", "4", "2"])):
            page.select_option("select[name=sort]", sort)
            with page.expect_navigation():
                page.click("form:has(select[name=sort]) button[type=submit]")
            assert "severity=&" in page.url and shown() == expected, (sort, page.url)
            assert page.locator("select[name=sort]").input_value() == sort
            shot(page, f"incident-list-{sort.strip('-')}-{language}-{db}")
        page.fill("input[name=q]", "disk 3")
        with page.expect_navigation():
            page.click("form:has(select[name=sort]) button[type=submit]")
        assert shown() == ["4"]
