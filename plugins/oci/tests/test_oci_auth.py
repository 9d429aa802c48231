"""HTTP Basic auth: the only credential OCI can send (user:pass in the subscription URL)."""
from __future__ import annotations

import base64

import pytest

from gateway import Rejected


def basic(credentials: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


@pytest.fixture
def source(make_source):
    return make_source(username="ons", password="s3cret:with-colon")


def test_right_credentials_pass(source, make_request):
    assert source.verify(make_request({}, basic("ons:s3cret:with-colon"))) is None


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"Authorization": "Bearer abc"}, "unauthorized"),
        (basic("ons:wrong"), "invalid_credentials"),
        (basic("other:s3cret:with-colon"), "invalid_credentials"),
        ({"Authorization": "Basic %%%"}, "invalid_credentials"),
    ],
    ids=["missing", "other-scheme", "wrong-password", "wrong-user", "not-base64"],
)
def test_refused_with_a_basic_challenge(source, make_request, headers, code):
    with pytest.raises(Rejected) as refused:
        source.verify(make_request({}, headers))
    assert (refused.value.status, refused.value.code) == (401, code)
    assert refused.value.headers == {"WWW-Authenticate": 'Basic realm="gateway"'}


def test_without_configured_credentials_nothing_is_required(make_source, make_request):
    assert make_source().verify(make_request({})) is None
