"""Options validation and discovery through the ``gateway`` entry point."""
from __future__ import annotations

import pytest
from marshmallow import ValidationError

from gateway.plugins import build_registry
from gateway_oci import OciSource
from gateway_oci.options import OciOptions


def test_registered_through_the_entry_point():
    assert build_registry().source_types["oci"] is OciSource


def test_defaults():
    options = OciOptions().load({})
    assert {k: options[k] for k in ("username", "password", "confirm_hosts", "verify_signature", "confirm_timeout")} == {
        "username": None,
        "password": None,
        "confirm_hosts": ["*.oraclecloud.com"],
        "verify_signature": False,
        "confirm_timeout": 3.0,
    }


def test_password_is_marked_secret():
    assert OciOptions().fields["password"].metadata.get("secret") is True


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"username": "ons"}, "username"),
        ({"password": "pw"}, "username"),
        ({"confirm_hosts": ["*.oraclecloud.com", ""]}, "confirm_hosts"),
        ({"confirm_timeout": "0s"}, "confirm_timeout"),
        ({"token": "abc"}, "token"),
    ],
    ids=["username-alone", "password-alone", "empty-host-pattern", "zero-timeout", "token"],
)
def test_invalid_options_are_refused(options, field):
    with pytest.raises(ValidationError) as refused:
        OciOptions().load(options)
    assert field in refused.value.messages


def test_timeout_takes_a_duration():
    assert OciOptions().load({"confirm_timeout": "1500ms"})["confirm_timeout"] == 1.5
