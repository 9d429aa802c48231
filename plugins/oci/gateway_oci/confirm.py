"""OCI subscription confirmation: recognise it, guard the URL, GET it, report the outcome.

A new HTTPS subscription stays *Pending* until the endpoint GETs the confirmation URL
that ONS posts to it.  The URL comes from the request, so it is checked against the
host allow-list before any request is made.
"""
from __future__ import annotations

import logging
import re
from typing import Optional, Sequence
from urllib.parse import urlsplit

import requests

from gateway import InboundRequest, Rejected, Reply
from gateway_oci.hosts import url_problem

log = logging.getLogger(__name__)

_QUERY = re.compile(r"\?[^\s'\")]*")


def confirmation_url(request: InboundRequest) -> tuple[bool, str]:
    """(is this a confirmation, its URL or ``""``), from the headers, Oracle's body or the spec's body."""
    headers, body = request.headers, request.payload if isinstance(request.payload, dict) else {}
    is_confirmation = (
        headers.get("X-OCI-NS-MessageType", "").strip().lower() == "subscriptionconfirmation"
        or "X-OCI-NS-ConfirmationURL" in headers
        or "ConfirmationURL" in body
        or body.get("type") == "Subscription Confirmation"
    )
    url = headers.get("X-OCI-NS-ConfirmationURL") or body.get("ConfirmationURL") or body.get("confirmationUrl")
    return is_confirmation, url.strip() if isinstance(url, str) else ""


def confirm(request: InboundRequest, url: str, *, allowed_hosts: Sequence[str], timeout: float) -> Reply:
    """GET ``url`` (one retry on a connection error, timeout or 5xx) and answer ONS.

    A failure answers 502 so that ONS, or an operator's "Resend confirmation", tries again.
    """
    if not url:
        raise Rejected(400, "missing_confirmation_url",
                       "subscription confirmation without X-OCI-NS-ConfirmationURL or ConfirmationURL")
    problem = url_problem(url, allowed_hosts)
    if problem:
        raise Rejected(400, "confirmation_host_not_allowed", f"confirmation URL refused: {problem}")

    status_code, error = _get_with_one_retry(url, timeout)
    body = request.payload if isinstance(request.payload, dict) else {}
    record = {
        "kind": "subscription_confirmation",
        "subscription_id": request.headers.get("X-OCI-NS-SubscriptionId") or body.get("subscriptionId"),
        "topic": (request.headers.get("X-OCI-NS-TopicOcid") or request.headers.get("X-OCI-NS-TopicName")
                  or body.get("topicId")),
        # The query string holds the confirmation token: never stored.
        "confirmation_url": urlsplit(url)._replace(query="", fragment="").geturl(),
        "outcome": "failed" if error else "confirmed",
        "status_code": status_code,
        "error": error,
    }
    if error:
        log.warning("OCI subscription %s not confirmed: %s", record["subscription_id"], error)
        return Reply(502, {"error": {"code": "confirmation_failed", "message": error}}, record=record)
    log.info("OCI subscription %s confirmed", record["subscription_id"])
    return Reply(200, {"status": "confirmed"}, record=record)


def _get_with_one_retry(url: str, timeout: float) -> tuple[Optional[int], Optional[str]]:
    """(last HTTP status or None, error or None); redirects are reported, never followed."""
    for _ in range(2):
        try:
            response = requests.get(url, timeout=timeout, allow_redirects=False)
        except (requests.ConnectionError, requests.Timeout) as exc:
            status_code, error = None, _without_query(f"{type(exc).__name__}: {exc}")
            continue
        except requests.RequestException as exc:
            return None, _without_query(f"{type(exc).__name__}: {exc}")
        status_code = response.status_code
        if 200 <= status_code < 300:
            return status_code, None
        error = f"confirmation URL answered HTTP {status_code}"
        if status_code < 500:
            return status_code, error + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
    return status_code, f"{error} (after one retry)"


def _without_query(message: str) -> str:
    """requests' error texts quote the URL, token included."""
    return _QUERY.sub("?…", message)
