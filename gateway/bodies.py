"""JSON bodies from the network, read the same way by webhooks and the API.

``json.loads`` is lenient where its leniency cannot be stored or answered: it takes NaN
and Infinity (PostgreSQL's json type refuses them), numbers beyond a float, nesting deep
enough to crash its recursion, and UTF-16 surrogates that UTF-8 cannot encode.  Webhooks
clean such text (an alert must not be lost to it); the API refuses it.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterator

from gateway.contracts import ApiError
from gateway.store.models import UNSTORABLE_TEXT

MAY_HOLD_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")
"""In a body, what decodes to ``UNSTORABLE_TEXT``: a JSON escape of NUL or of a UTF-16
surrogate, or a surrogate's bytes (which ``json.loads`` lets through).  Only a body holding
one needs its strings looked at."""


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a float")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)
"""Built once: ``json.loads`` with hooks builds a decoder on every call."""


def _too_deep() -> ApiError:
    return ApiError(400, "invalid_json", "body is not valid JSON: nested too deeply")


def parse_json(body: bytes) -> Any:
    """The body as JSON (decoded as ``json.loads`` decodes bytes); raises ``ApiError`` 400 ``invalid_json``."""
    try:
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None


def clean_text(text: str) -> str:
    """``text`` with what no column can hold replaced by U+FFFD."""
    return UNSTORABLE_TEXT.sub("\ufffd", text)


def cleaned(payload: Any) -> Any:
    """``payload`` with every string, keys too, passed through ``clean_text``."""
    try:
        return _cleaned(payload)
    except RecursionError:  # the walk needs more stack per level than the parser did
        raise _too_deep() from None


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_cleaned(item) for item in value]
    if isinstance(value, dict):
        return {_cleaned(key): _cleaned(item) for key, item in value.items()}
    return value


def strings(payload: Any) -> Iterator[str]:
    """Every string in ``payload``, keys too, however deep (no recursion)."""
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
