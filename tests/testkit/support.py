"""Helpers that test modules import directly (pytest's importlib mode keeps conftest out of reach)."""
from __future__ import annotations

import time

ADMIN_TOKEN = "test-admin-token"
"""What ``make_app`` sets as GATEWAY_ADMIN_TOKEN."""


def admin_client(app):
    """A test client whose requests carry the admin bearer token."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ADMIN_TOKEN}"
    return client


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it is truthy; fail the test with its last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            assert value, f"condition not met within {timeout}s"
            return value
        time.sleep(interval)
