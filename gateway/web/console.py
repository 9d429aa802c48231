"""The operator console: sign-in, the layout, webhook sources, deliveries, raw payloads and settings.

Server-rendered with Jinja; every asset is served from ``static/`` and the Content-Security-Policy
allows no inline script.  Every page checks its role on the server (``console_blueprint``), and every
form carries a CSRF token that is checked before anything changes.  Incident pages live with the
incident store, in ``gateway.incidents.console``, built on the same blueprint factory.
"""
from __future__ import annotations

import json
import os
import secrets
import zoneinfo
from datetime import datetime
from typing import Optional

from flask import (
    Blueprint, Flask, Response, abort, current_app, flash, g, redirect, render_template, request, session, url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_babel import Babel, format_timedelta, gettext as _, lazy_gettext
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from marshmallow import ValidationError, fields as ma_fields
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from gateway import metrics, users
from gateway.config import redacted
from gateway.contracts import ApiError
from gateway.pipeline import deadletters, refusals
from gateway.store import partitions
from gateway.store.lists import one_of
from gateway.store.models import DeliveryRow, DeliveryAttempt, RawRequest, utcnow
from gateway.web import auth
from gateway.web.api import all_sources, change_runtime_source, create_runtime_source, reload_everywhere
from gateway.web.common import COUNT_CAP, reading

LANGUAGES = ("ko", "en")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
WORDS = {
    "triggered": lazy_gettext("triggered"), "acknowledged": lazy_gettext("acknowledged"),
    "resolved": lazy_gettext("resolved"), "closed": lazy_gettext("closed"),
    "critical": lazy_gettext("critical"), "error": lazy_gettext("error"), "warning": lazy_gettext("warning"),
    "info": lazy_gettext("info"),
}
"""The statuses and severities the pages show, translated by value (``| word``)."""
csrf = CSRFProtect()
babel = Babel()


def _gateway():
    return current_app.extensions["gateway"]


def console_blueprint(name: str, import_name: str, **kwargs) -> Blueprint:
    """A blueprint of console pages: signed-in users of at least ``viewer``, CSRF on every
    unsafe method, errors answered as pages.  A view needing more takes ``require_role``."""
    bp = Blueprint(name, import_name, **kwargs)

    @bp.before_request
    def _guard():
        if request.endpoint not in PUBLIC_ENDPOINTS:
            auth.require_role("viewer")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            csrf.protect()

    @bp.errorhandler(ApiError)
    def _refused(exc: ApiError):
        return render_template("console/error.html", status=exc.status, message=exc.message), exc.status

    @bp.errorhandler(ValidationError)
    def _invalid(exc: ValidationError):
        return render_template("console/error.html", status=422, message=_flat(exc.messages)), 422

    @bp.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        message = _("The form expired or was not sent from this page; reload it and try again.") \
            if isinstance(exc, CSRFError) else exc.description
        return render_template("console/error.html", status=exc.code, message=message), exc.code

    return bp


def _flat(messages) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in messages.items())
    if isinstance(messages, list):
        return ", ".join(_flat(m) for m in messages)
    return str(messages)


bp = console_blueprint("console", __name__, template_folder="templates", static_folder="static",
                       static_url_path="/static")
PUBLIC_ENDPOINTS = {"console.login", "console.static"}
ADMIN = auth.needs("admin")
OPERATOR = auth.needs("operator")


# -- sign-in ----------------------------------------------------------------------

def _safe_next(target: Optional[str]) -> str:
    """Only a path on this site: never an absolute or protocol-relative URL."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return _home()


INCIDENTS_PAGE = "incidents_console.list_incidents"


def _when(value: Optional[datetime], zone: Optional[zoneinfo.ZoneInfo] = None) -> str:
    """``value`` in the viewer's time zone; a page showing many times passes ``zone`` (the ``zone()``
    global, looked up once) rather than have each look it up (a timeline shows up to a thousand).
    strftime, not Babel's format_datetime: the same digits in every language, at a tenth of the cost."""
    return value.astimezone(zone or _zone()).strftime("%Y-%m-%d %H:%M:%S %Z") if value else ""


def _zone() -> zoneinfo.ZoneInfo:
    """The viewer's time zone (``_timezone``), once a request, as a ``ZoneInfo``: converting to it runs in
    C, to Babel's pytz zone in Python (a tenth of the incident page's CPU with a thousand entries)."""
    return g.get("zone") or g.setdefault("zone", zoneinfo.ZoneInfo(_timezone()))


def _home() -> str:
    """Where sign-in lands: the incident list, or the sources when the incident store is disabled."""
    return url_for(INCIDENTS_PAGE if INCIDENTS_PAGE in current_app.view_functions else "console.sources")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("console/login.html", next=request.args.get("next", ""))
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    engine = _gateway().engine
    if users.recent_failures(engine, name) >= users.MAX_FAILURES:
        return render_template("console/login.html", next=request.form.get("next", ""), username=name,
                               error=_("Too many failed sign-ins; wait a few minutes.")), 429, \
            {"Retry-After": str(int(users.FAILURE_WINDOW.total_seconds()))}
    row = users.authenticate(engine, name, password)
    if row is None:
        return render_template("console/login.html", next=request.form.get("next", ""), username=name,
                               error=_("Wrong username or password.")), 401
    session.clear()  # a fresh session on sign-in: nothing chosen before it carries over
    login_user(auth.SignedIn(row))
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    logout_user()
    session.clear()
    return redirect(url_for("console.login"))


# -- raw payloads ----------------------------------------------------------------

@bp.get("/events/<id:event_id>")
def event(event_id: int):
    with reading() as conn:
        row = partitions.find_request(conn, RawRequest, event_id)
    if row is None:
        abort(404, _("This request is no longer stored (see global.retention)."))
    try:
        pretty = json.dumps(json.loads(row.body), indent=2, ensure_ascii=False)
    except ValueError:
        pretty = row.body.decode("utf-8", "replace")
    return render_template("console/event.html", event=row, pretty=pretty)


@bp.get("/events/<id:event_id>/raw")
def event_raw(event_id: int):
    """The exact bytes received, as text the browser shows and never interprets."""
    with reading() as conn:
        row = partitions.find_request(conn, RawRequest, event_id, RawRequest.body)
    if row is None:
        abort(404)
    return Response(row.body, mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"})


# -- webhook sources ---------------------------------------------------------------

def _source_types() -> list[tuple[str, str]]:
    return sorted((name, cls.display_name or name) for name, cls in _gateway().registry.source_types.items())


def _option_fields(type_name: str) -> list[tuple[str, ma_fields.Field]]:
    """The type's own options, the form fields the new-source form shows (token has its own)."""
    cls = _gateway().registry.source_types[type_name]
    return [(name, field) for name, field in cls.options_schema().fields.items()
            if name != "token" and isinstance(field, (ma_fields.String, ma_fields.Boolean, ma_fields.Number))]


@bp.get("/sources")
def sources():
    types = _source_types()
    chosen = request.args.get("type") or (types[0][0] if types else None)
    sources = all_sources()
    with reading() as conn, partitions.planned_once(conn):  # each statement reads every source's days of a span
        stats = refusals.last_day(conn, [s["key"] for s in sources], COUNT_CAP)
    return render_template("console/sources.html", sources=sources, stats=stats,
                           count_cap=COUNT_CAP, types=types,
                           chosen=chosen, option_fields=_option_fields(chosen) if chosen else [],
                           adding="new" in request.args, shown_token=session.pop("shown_token", None))


@bp.post("/sources")
@ADMIN
def create_source():
    form = request.form
    type_name = form.get("type", "")
    if type_name not in _gateway().registry.source_types:
        abort(400, _("Choose a source type."))
    data = {"type": type_name, "name": form.get("name", "").strip() or None}
    if form.get("token"):
        data["token"] = form["token"]
    for name, field in _option_fields(type_name):
        if isinstance(field, ma_fields.Boolean):
            data[name] = name in form
        elif form.get(name, "").strip():
            data[name] = form[name].strip()
    body = create_runtime_source(data)
    if body.get("token"):
        session["shown_token"] = {"key": body["key"], "token": body["token"]}
    flash(_("Source %(name)s created.", name=body["name"]))
    return redirect(url_for("console.sources"))


@bp.post("/sources/<source_key:key>")
@ADMIN
def change_source(key: str):
    action = request.form.get("action")
    change = {"enable": {"enabled": True}, "disable": {"enabled": False}, "rotate": {"rotate_token": True}}.get(action)
    if change is None:
        abort(400, _("Unknown action."))
    body = change_runtime_source(key, change)
    if body.get("token"):
        session["shown_token"] = {"key": key, "token": body["token"]}
    return redirect(url_for("console.sources"))


@bp.get("/sources/<source_key:key>")
def source(key: str):
    """The source's last 100 requests, accepted or refused, newest first, with each refusal's reason."""
    found = next((s for s in all_sources() if s["key"] == key), None)
    if found is None:
        abort(404, _("No such source."))
    with reading() as conn:
        since = partitions.recent_since(conn, lambda since: refusals.counted_requests(key, None, since), 100)
        requests = conn.execute(refusals.requests_of(key, None, newest=100, since=since).limit(100)).all()
    return render_template("console/source.html", source=found, requests=requests)


# -- deliveries ---------------------------------------------------------------------

@bp.get("/deliveries")
def deliveries():
    sink = request.args.get("sink") or None
    status = request.args.get("status") or None
    with reading() as conn:
        counts = conn.execute(select(DeliveryRow.sink_name, DeliveryRow.status, func.count())
                              .where(DeliveryRow.status.in_(("pending", "dead")))  # the status index
                              .group_by(DeliveryRow.sink_name, DeliveryRow.status)).all()
        query = select(DeliveryRow.__table__).order_by(DeliveryRow.id.desc()).limit(100)
        if sink:
            query = query.where(DeliveryRow.sink_name == sink)
        if status:
            query = query.where(DeliveryRow.status == status)
        rows = conn.execute(query).all()
        attempts = {}
        for attempt in conn.execute(select(DeliveryAttempt.__table__).where(one_of(DeliveryAttempt.delivery_id, "ids"))
                                    .order_by(DeliveryAttempt.id), {"ids": [r.id for r in rows]}):
            attempts.setdefault(attempt.delivery_id, []).append(attempt)
    per_sink: dict[str, dict[str, int]] = {}
    for sink_name, row_status, count in counts:
        per_sink.setdefault(sink_name, {})[row_status] = count
    return render_template("console/deliveries.html", per_sink=per_sink, rows=rows, attempts=attempts,
                           sink=sink, status=status)


@bp.post("/deliveries/retry")
@OPERATOR
def retry_deliveries():
    runtime = current_app.extensions["gateway"].runtime
    if request.form.get("delivery", "").isdigit():
        result = deadletters.redrive(runtime, delivery_id=int(request.form["delivery"]))
    else:
        result = deadletters.redrive(runtime, sink=request.form.get("sink", ""))
    flash(_("%(requeued)d requeued, %(superseded)d superseded (a later alert was already delivered).",
            requeued=result.requeued, superseded=len(result.superseded)))
    return redirect(url_for("console.deliveries", sink=request.form.get("sink") or None))


@bp.get("/plugins")
def plugins():
    return render_template("console/plugins.html", plugins=[p.as_dict() for p in _gateway().registry.plugins])


# -- settings ----------------------------------------------------------------------

@bp.get("/settings")
def settings():
    engine = _gateway().engine
    who = auth.principal()
    is_admin = who.can("admin")
    runtime = _gateway().runtime
    return render_template(
        "console/settings.html", is_admin=is_admin, users=users.list_users(engine) if is_admin else [],
        tokens=users.list_tokens(engine, None if is_admin else who.user_id), roles=users.ROLES,
        config=json.dumps(redacted(runtime.snapshot.config), indent=2, ensure_ascii=False, default=str)
        if is_admin else None,
        reload_ok=runtime.reload_ok, reload_error=runtime.reload_error,
        all_workers_ok=metrics.all_workers_reloaded_ok() if is_admin else None, loaded_at=runtime.snapshot.config.loaded_at,
        shown_token=session.pop("shown_token", None), languages=LANGUAGES)


def _user_action(action) -> Response:
    try:
        action()
    except users.UserError as exc:
        raise ApiError(422, "invalid_user", str(exc)) from None
    return redirect(url_for("console.settings"))


@bp.post("/settings/users")
@ADMIN
def create_user():
    form = request.form
    return _user_action(lambda: users.create_user(_gateway().engine, form.get("name", "").strip(),
                                                  form.get("role", ""), form.get("password", "")))


@bp.post("/settings/users/<int:user_id>")
@ADMIN
def change_user(user_id: int):
    engine, form = _gateway().engine, request.form
    row = users.get_user(engine, user_id)
    if row is None:
        abort(404)
    actions = {
        "role": lambda: users.set_role(engine, row.name, form.get("role", "")),
        "disable": lambda: users.set_enabled(engine, row.name, False),
        "enable": lambda: users.set_enabled(engine, row.name, True),
        "password": lambda: users.set_password(engine, row.name, form.get("password", "")),
    }
    if form.get("action") not in actions:
        abort(400, _("Unknown action."))
    return _user_action(actions[form["action"]])


@bp.post("/settings/tokens")
def create_token():
    """Anyone signed in may make tokens for themselves: a token has no more power than its user."""
    who = auth.principal()
    token = users.create_token(_gateway().engine, who.name, request.form.get("name", "").strip()[:255])
    session["shown_token"] = {"key": _("API token"), "token": token}
    return redirect(url_for("console.settings"))


@bp.post("/settings/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int):
    who = auth.principal()
    if not users.revoke_token(_gateway().engine, token_id, None if who.can("admin") else who.user_id):
        abort(404)
    return redirect(url_for("console.settings"))


@bp.post("/settings/preferences")
def preferences():
    language = request.form.get("language") or None
    zone = request.form.get("timezone", "").strip() or None
    if language not in (None, *LANGUAGES):
        abort(400)
    if zone is not None:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            abort(400, _("Unknown time zone."))
    users.set_preferences(_gateway().engine, auth.principal().name, language, zone)
    return redirect(url_for("console.settings"))


@bp.post("/settings/reload")
@ADMIN
def reload_config():
    reload_everywhere()  # a failure shows on the settings page, with its error
    return redirect(url_for("console.settings"))


# -- the app -------------------------------------------------------------------------

def _locale() -> str:
    user = current_user if current_user and current_user.is_authenticated else None
    if user is not None and user.language in LANGUAGES:
        return user.language
    return request.accept_languages.best_match(LANGUAGES) or _gateway().runtime.snapshot.config.default_language


def _timezone() -> str:
    user = current_user if current_user and current_user.is_authenticated else None
    return (user.timezone if user is not None and user.timezone else None) or \
        _gateway().runtime.snapshot.config.timezone


def secret_key(path: str) -> str:
    """The key in ``path``, made once: the first process writes it, every other one reads it."""
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    with open(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(48))
    try:
        os.link(staging, path)  # fails if another process got there first; theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(staging)
    with open(path, encoding="ascii") as file:
        return file.read().strip()


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, minus the signer's set-up on a request that sends no session
    cookie: webhooks and API calls never do, and building it was ~3 % of a webhook's CPU."""

    def open_session(self, app: Flask, request):
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    """Sessions, CSRF, languages and the security headers of the console."""
    app.session_interface = CookieSessions()
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = (app.extensions["gateway"].settings.env.get("GATEWAY_SECRET_KEY")
                                    or secret_key(os.path.abspath(os.path.join("instance", "secret_key"))))
    external = app.extensions["gateway"].runtime.snapshot.config.external_url or ""
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=external.startswith("https://"),
        REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_CHECK_DEFAULT=False,  # only console blueprints check; webhooks and the bearer API cannot
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session: a page left open still submits
    )
    auth.init_app(app)
    csrf.init_app(app)
    babel.init_app(app, locale_selector=_locale, timezone_selector=_timezone)
    app.jinja_env.globals.update(can=lambda role: bool(auth.principal() and auth.principal().can(role)),
                                 incidents_shown=lambda: INCIDENTS_PAGE in app.view_functions, home=_home,
                                 principal=auth.principal, current_locale=_locale, zone=_zone)
    app.jinja_env.filters.update(
        when=_when,
        word=lambda value: WORDS.get(value, value or ""),
        # One "now" per page, so equal times read alike.
        ago=lambda value: format_timedelta(value - g.setdefault("now", utcnow()), add_direction=True) if value else "",
    )

    @app.after_request
    def _headers(response: Response) -> Response:
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
