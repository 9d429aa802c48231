"""Keeps ONS subscription tokens out of the raw journal.

Confirmation and unsubscribe URLs carry a ``token`` query value that confirms or
cancels the subscription; OCI sends them in headers on every message and in the body of
confirmations.  The journal keeps everything else byte for byte.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping
from urllib.parse import unquote

from gateway import InboundRequest

TOKEN_HEADERS = ("X-OCI-NS-ConfirmationURL", "X-OCI-NS-UnsubscribeURL")
TOKEN_BODY_KEYS = ("ConfirmationURL", "confirmationUrl", "UnsubscribeURL", "unsubscribeUrl")
REDACTED = "[redacted]"


def url_tokens(urls: Iterable[Any]) -> set[str]:
    """Every ``token`` value in these URLs, as written and percent-decoded.

    The query is cut out by hand (what ``urlsplit`` would return), not with ``urlsplit``
    itself: it raises on a malformed host such as ``http://[::1:/``, and scrub runs
    before the URL guard and on every message, token-bearing or not.
    """
    tokens = set()
    for url in urls:
        if not isinstance(url, str):
            continue
        for part in url.partition("#")[0].partition("?")[2].split("&"):
            name, _, value = part.partition("=")
            if name == "token" and value:
                tokens.update({value, unquote(value)})
    return tokens


def scrub_request(request: InboundRequest) -> tuple[Mapping[str, str], bytes]:
    payload = request.payload if isinstance(request.payload, dict) else {}
    tokens = url_tokens([request.headers.get(h) for h in TOKEN_HEADERS] + [payload.get(k) for k in TOKEN_BODY_KEYS])
    if not tokens:
        return request.headers, request.body
    headers, body = dict(request.headers), request.body
    for token in sorted(tokens, key=len, reverse=True):
        headers = {name: value.replace(token, REDACTED) for name, value in headers.items()}
        body = body.replace(token.encode(), REDACTED.encode())
    return headers, body
