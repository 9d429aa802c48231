"""Marshmallow fields and the base schema shared by the core and plugin option schemas."""
from __future__ import annotations

import re
from typing import Callable

from marshmallow import Schema, ValidationError, fields

DURATION_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
MAX_DURATION = 10 * 365 * 86400
"""Longer is a mistake, and one long enough overflows the date arithmetic it feeds."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_duration(value: object) -> float:
    """``"10m"`` -> 600.0; bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = DURATION_TEXT.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 10m, 2h, 7d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds != seconds:  # NaN, from YAML's .nan
        raise ValueError("not a duration")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION:
        raise ValueError("a duration cannot be longer than 10 years")
    return seconds


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_RATE_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_rate(value: object) -> float:
    """``"100/s"`` -> 100.0, ``"30/m"`` -> 0.5: requests per second."""
    match = _RATE.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a rate (use e.g. 100/s, 30/m, 500/h)")
    rate = float(match.group(1)) / _RATE_UNIT_SECONDS[match.group(2)]
    if rate <= 0:
        raise ValueError("a rate must be positive")
    return rate


def parse_size(value: object) -> int:
    """``"1MiB"`` -> 1048576, ``"1MB"`` -> 1000000; bare integers are bytes."""
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size (use e.g. 1048576, 512KiB, 1MiB, 1MB)")
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


class _Parsed(fields.Field):
    """A field whose text form a parser turns into a number; its ValueError becomes the message."""

    parse: Callable[[object], object]

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return type(self).parse(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    def _serialize(self, value, attr, obj, **kwargs):
        return value


class Duration(_Parsed):
    """A duration such as ``30s``, ``10m``, ``2h`` or ``7d``, loaded as seconds (float)."""

    parse = staticmethod(parse_duration)


class Size(_Parsed):
    """A size such as ``1048576``, ``512KiB`` or ``1MiB``, loaded as bytes (int)."""

    parse = staticmethod(parse_size)


class Rate(_Parsed):
    """A rate such as ``100/s``, ``30/m`` or ``500/h``, loaded as requests per second (float)."""

    parse = staticmethod(parse_rate)


class OptionsSchema(Schema):
    """The base of ``SourceOptions`` and ``SinkOptions``: cross-field checks run even when a field failed.

    marshmallow skips every ``@validates_schema`` check once any field has an error (unless
    the plugin writes ``skip_on_field_errors=False``), so an operator fixed one problem only
    to be shown the next.  Here every check runs, on the fields that did load; a check that
    then fails on a missing value (``data["x"]`` where ``x`` was refused) is not counted,
    as ``x``'s own problem is already reported.  Both hooks are marshmallow's private API
    (3.x and 4.x); tests/test_config.py fails if a marshmallow release changes them.
    """

    def _invoke_schema_validators(self, **kwargs):
        super()._invoke_schema_validators(**{**kwargs, "field_errors": False})

    def _run_validator(self, validator_func, output, **kwargs):
        if kwargs["error_store"].errors:
            validator_func = _judging_only_what_loaded(validator_func)
        super()._run_validator(validator_func, output, **kwargs)


def _judging_only_what_loaded(check: Callable) -> Callable:
    def run(*args, **kwargs):
        try:
            check(*args, **kwargs)
        except ValidationError:
            raise
        except Exception:  # it needed a field that failed, whose own problem is reported
            pass

    return run
