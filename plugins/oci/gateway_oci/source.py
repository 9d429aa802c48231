"""The ``oci`` source type: OCI Notifications (ONS) HTTPS subscriptions carrying Monitoring alarms."""
from __future__ import annotations

import hmac
import json
from typing import Any, Mapping, Optional

from gateway import Alert, InboundRequest, Rejected, Reply, SourceType
from gateway_oci.alarm import DIMENSION, to_alerts
from gateway_oci.confirm import confirm, confirmation_url
from gateway_oci.options import OciOptions
from gateway_oci.scrub import scrub_request
from gateway_oci.signature import CertificateCache, verify_signature

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="gateway"'}


class OciSource(SourceType):
    """One configured OCI subscription endpoint; stateless apart from the certificate cache."""

    name = "oci"
    display_name = "Oracle Cloud (OCI)"
    fingerprint_fields = ("dedupe_key", "alarm_id")
    options_schema = OciOptions

    def __init__(self, key: str, options: Mapping[str, Any]):
        super().__init__(key, options)
        self._certificates = CertificateCache(timeout=self.options["confirm_timeout"])

    def verify(self, request: InboundRequest) -> None:
        """Basic auth first (cheap, and keeps strangers from triggering certificate fetches), then the signature."""
        if self.options.get("username"):
            self._check_basic_auth(request)
        if self.options["verify_signature"]:
            verify_signature(request, self._certificates, self.options["confirm_hosts"])

    def scrub(self, request: InboundRequest) -> tuple[Mapping[str, str], bytes]:
        return scrub_request(request)

    def delivery_id(self, request: InboundRequest) -> Optional[str]:
        """ONS delivers at least once: its message id makes every redelivery a duplicate, alarms or not."""
        header = request.headers.get("X-OCI-NS-MessageId")
        if header:
            return header
        envelope = request.payload if isinstance(request.payload, dict) else {}
        message_id = envelope.get("messageId") if envelope.get("type") == "Notification" else None
        return str(message_id) if message_id else None

    def handshake(self, request: InboundRequest) -> Optional[Reply]:
        is_confirmation, url = confirmation_url(request)
        if not is_confirmation:
            return None
        return confirm(request, url, allowed_hosts=self.options["confirm_hosts"],
                       timeout=self.options["confirm_timeout"])

    def parse(self, request: InboundRequest) -> list[Alert]:
        return to_alerts(request.payload, received_at=request.received_at,
                         message_id=request.headers.get("X-OCI-NS-MessageId"))

    def group(self, alert: Alert) -> str:
        """The alarm: a recovery naming no stream speaks for all of its streams."""
        alarm_id = alert.labels.get("alarm_id")
        return f"oci:alarm:{alarm_id}" if alarm_id else f"oci:dedupe:{alert.labels['dedupe_key']}"

    def fingerprint(self, alert: Alert) -> str:
        """The alarm and the stream's dimensions (keys case-folded), not ``dedupeKey``: that one is
        per alarm in grouped messages and per stream in split ones, so it would give the same
        stream two incidents.  An alert naming no stream is the alarm's own (its group)."""
        stream = sorted((name[len(DIMENSION):].lower(), value)
                        for name, value in alert.labels.items() if name.startswith(DIMENSION))
        alarm = self.group(alert)
        return f"{alarm}:{json.dumps(stream, ensure_ascii=False, separators=(',', ':'))}" if stream else alarm

    def _check_basic_auth(self, request: InboundRequest) -> None:
        credentials = request.headers.basic_credentials()
        if credentials is None:
            raise Rejected.unauthorized("HTTP Basic credentials required", headers=_CHALLENGE)
        user, password = credentials
        # Both comparisons always run, so the timing does not tell which half was wrong.
        user_ok = hmac.compare_digest(user.encode(), self.options["username"].encode())
        password_ok = hmac.compare_digest(password.encode(), self.options["password"].encode())
        if not (user_ok and password_ok):
            raise Rejected.unauthorized("invalid credentials", code="invalid_credentials", headers=_CHALLENGE)
