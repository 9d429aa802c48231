"""The host allow-list guarding every URL this plugin fetches (an SSRF guard).

Confirmation and signing-certificate URLs arrive in the request itself, so anyone who
can reach the endpoint could otherwise make the gateway fetch an internal address.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Optional, Sequence
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
"""Hosts that may be reached over plain http (local stand-ins for OCI)."""


def url_problem(url: str, patterns: Sequence[str]) -> Optional[str]:
    """Why ``url`` may not be fetched, or ``None`` when it may.

    The URL must be https (http only for a loopback host) and its lower-cased host must
    match one of the ``fnmatch`` globs in ``patterns``.  Backslashes, whitespace and
    user info are refused outright: URL parsers disagree on them, and the host checked
    here must be the host ``requests`` connects to.
    """
    reason = _reason(url, patterns)
    return f"{reason} (allowed host patterns: {', '.join(patterns) or 'none'})" if reason else None


def _reason(url: str, patterns: Sequence[str]) -> Optional[str]:
    if any(ch == "\\" or ch.isspace() or not ch.isprintable() for ch in url):
        return "URL contains a backslash, whitespace or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        return f"URL is malformed: {exc}"
    host = (parts.hostname or "").lower()
    if not host:
        return "URL has no host"
    try:
        host.encode("idna")  # urllib3 makes the same check, and raises, before it connects
    except UnicodeError:
        return f"URL is malformed: host {host!r} has an empty, too long or invalid label"
    if "@" in parts.netloc:
        return f"URL for host {host!r} carries user info"
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        return f"host {host!r} must be reached over https (http only for 127.0.0.1, ::1, localhost)"
    if parts.scheme not in ("https", "http"):
        return f"host {host!r} must be reached over https, not {parts.scheme!r}"
    if not any(fnmatchcase(host, pattern.lower()) for pattern in patterns):
        return f"host {host!r} is not allowed"
    return None
