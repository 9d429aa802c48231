"""The core's suite on the conformance kit (``gateway.testing``, a pytest plugin of the core
distribution): its fixtures, with the test-only plugin ``testkit`` registered and a config
that uses it.

PostgreSQL runs when ``GATEWAY_TEST_POSTGRES_URL`` is set; each test run gets its own
schema (dropped at the end) and every test starts from empty tables.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway import clock

sys.path.insert(0, str(Path(__file__).parent))
import testkit  # noqa: E402  (the test-only plugin; see testkit/__init__.py)

DEFAULT_CONFIG = """
sources:
  - key: src
    type: testsrc
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""


@pytest.fixture
def gateway_config() -> str:
    return DEFAULT_CONFIG


@pytest.fixture
def gateway_plugins() -> tuple:
    return (testkit,)


@pytest.fixture
def moved_clock():
    """``gateway.clock``, for a test to move forward (a retry, a lease, a refresh due without
    sleeping, so a stalled machine cannot make it due early); back to wall time after the test."""
    yield clock
    clock.reset()
