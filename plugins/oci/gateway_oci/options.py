"""Options of an ``oci`` source in gateway.yaml."""
from __future__ import annotations

from marshmallow import ValidationError, fields, validate, validates_schema

from gateway import Duration, SourceOptions


class OciOptions(SourceOptions):
    """OCI cannot send custom headers, so Basic auth (in the subscription URL) is the credential."""

    username = fields.String(load_default=None, allow_none=True)
    password = fields.String(load_default=None, allow_none=True, metadata={"secret": True})
    confirm_hosts = fields.List(
        fields.String(validate=validate.Length(min=1, error="a host pattern cannot be empty")),
        load_default=lambda: ["*.oraclecloud.com"],
    )
    verify_signature = fields.Boolean(load_default=False)
    # OCI waits 5 s for the whole answer; the confirmation GET happens inside that answer.
    confirm_timeout = Duration(load_default=3.0, validate=validate.Range(min=0, min_inclusive=False))

    @validates_schema
    def _credentials_come_in_pairs(self, data, **kwargs):
        if bool(data.get("username")) != bool(data.get("password")):
            raise ValidationError("username and password must be given together", "username")

    @validates_schema
    def _no_token(self, data, **kwargs):
        """A token would be silently unchecked: OCI can send neither a custom header nor a query string."""
        if data.get("token"):
            raise ValidationError(
                "OCI cannot send a token (no custom headers, no query parameters); use username/password", "token"
            )
