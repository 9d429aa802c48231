"""Who is acting, and what their role lets them do.  Webhooks use only their source's own authentication.

``/api/*`` takes a bearer token: ``GATEWAY_ADMIN_TOKEN`` (a service token, acting as ``admin``)
or a user's personal token (acting as that user, with that user's role).  The console's pages
take the Flask-Login session of a signed-in user; the API never does, so a cookie can never
make an API call that skipped the console's CSRF check.
"""
from __future__ import annotations

import functools
import hmac
from typing import Callable, Optional

from flask import current_app, g, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user

from gateway import users
from gateway.contracts import ApiError
from gateway.users import Principal

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gateway"'}
SERVICE_PRINCIPAL = Principal("admin", "admin")
login_manager = LoginManager()
login_manager.login_view = "console.login"
login_manager.session_protection = "basic"

ROLES = users.ROLES
"""Least to most trusted: each role may do what the ones before it may."""

class SignedIn(UserMixin):
    """The session's user, read from the database on every request: a role change or a
    disabled account takes effect at once."""

    def __init__(self, row):
        self.id = row.id
        self.name = row.name
        self.role = row.role
        self.language = row.language
        self.timezone = row.timezone

    @property
    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.id)


@login_manager.user_loader
def _load_user(user_id: str) -> Optional[SignedIn]:
    if not user_id.isdigit():
        return None
    row = users.get_user(current_app.extensions["gateway"].engine, int(user_id))
    return SignedIn(row) if row is not None and row.enabled else None


def _by_token() -> bool:
    """The API always authenticates by bearer token; any other route does when one is sent."""
    return request.path.startswith("/api/") or "Authorization" in request.headers


def _bearer_principal() -> Principal:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing_token", "send Authorization: Bearer <token>", headers=CHALLENGE)
    expected = current_app.config.get("ADMIN_TOKEN")
    if expected and hmac.compare_digest(token.encode(), str(expected).encode()):
        return SERVICE_PRINCIPAL
    principal = users.principal_for_token(current_app.extensions["gateway"].engine, token)
    if principal is None:
        raise ApiError(401, "invalid_token", "the bearer token is not valid", headers=CHALLENGE)
    return principal


def principal() -> Optional[Principal]:
    """Who this request acts as: checked once per request.  A missing (on the API) or wrong
    token is a 401 here; on a page, None means nobody is signed in."""
    if "principal" not in g:
        if _by_token():
            g.principal = _bearer_principal()
        else:
            g.principal = current_user.principal if current_user.is_authenticated else None
    return g.principal


def require_role(role: str) -> None:
    """Refuse this request unless its caller holds ``role`` or one after it in ``ROLES``: 401 on
    the API without a valid token, a redirect to the sign-in page on a page nobody signed in to,
    403 for a caller whose role is too low.  The service token holds every role."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    who = principal()
    if who is None:
        # A page: sign in first, then come back.
        raise _Redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    if not who.can(role):
        raise ApiError(403, "forbidden", f"{who.name} is {who.role}; this needs {role}")


def needs(role: str) -> Callable:
    """A view decorator: ``require_role(role)`` before the view, for an endpoint stricter than its blueprint."""
    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            require_role(role)
            return view(*args, **kwargs)

        return guarded

    return decorate


class _Redirect(Exception):
    """Raised by a role check on a page when nobody is signed in; answered with a redirect."""

    def __init__(self, location: str):
        super().__init__(location)
        self.response = redirect(location)


def actor() -> str:
    """Who the timeline names for this request's action: the user, or ``admin`` for the service token."""
    return principal().name


def init_app(app) -> None:
    login_manager.init_app(app)
    app.register_error_handler(_Redirect, lambda exc: exc.response)
