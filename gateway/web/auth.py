"""Bearer-token protection for /api/*.  Webhooks use only their source's own authentication."""
from __future__ import annotations

import hmac

from flask import current_app, request

from gateway.contracts import ApiError

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gateway"'}

ROLES = ("viewer", "operator", "admin")
"""Least to most trusted: each role may do what the ones before it may."""


def require_role(role: str) -> None:
    """Refuse this request (401) unless its caller holds ``role`` (or one after it in ``ROLES``).

    Today's one credential is the admin token, which holds every role; users with lesser
    roles come with the console.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    expected = current_app.config.get("ADMIN_TOKEN")
    if not expected:
        raise ApiError(401, "api_disabled", "the API is disabled: set GATEWAY_ADMIN_TOKEN", headers=CHALLENGE)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing_token", "send Authorization: Bearer <token>", headers=CHALLENGE)
    if not hmac.compare_digest(token.strip().encode(), str(expected).encode()):
        raise ApiError(401, "invalid_token", "the bearer token is not valid", headers=CHALLENGE)


def require_admin() -> None:
    """A ``before_request`` hook for the core's API blueprints."""
    require_role("admin")


def actor() -> str:
    """Who the timeline names for an API action; users and sign-in come with the UI."""
    return "admin"
