"""Normalises an OCI Monitoring alarm message, in any of the forms it arrives in, to alerts.

Three forms reach the endpoint: Oracle's real alarm body (``dedupeKey``, ``type``,
``alarmMetaData``), the internal spec's SNS-like envelope (``type: Notification`` with
the alarm as a JSON string in ``message``), and the spec's flat alarm (``alarmId``,
``status``, ``metricData``).  One function reads them all so that the same alarm gives
the same alerts whichever way it was wrapped, one per metric stream.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Mapping, Optional
from urllib.parse import parse_qs, urlsplit

from gateway import SEVERITIES, Alert, Link, Refused, Rejected, Resource

log = logging.getLogger(__name__)

STATUS_BY_TYPE = {
    "OK_TO_FIRING": "firing",
    "REPEAT": "firing",
    "FIRING_TO_OK": "resolved",
    "RESET": "resolved",
}
"""Oracle's message types; RESET means the metric stream disappeared (resource gone or moved)."""

STATELESS_TYPES = frozenset({"RULE_CHANGE"})
"""Seen in the live feed (the aramco plugin drops it), not in Oracle's list: no alarm state, no alert."""

STATUS_BY_FLAT_STATUS = {"FIRING": "firing", "OK": "resolved", "INSUFFICIENT_DATA": None}
"""The spec's table (FIRING -> ALERT, OK -> RECOVERY, INSUFFICIENT_DATA -> NONE); any other state is NONE too."""

DEFAULT_SEVERITY = "info"
"""The spec's default for a severity outside CRITICAL/ERROR/WARNING/INFO."""

DIMENSION = "dimension."
"""Label prefix of a metric stream's dimensions: the stream's identity, read back by the fingerprint."""


def unwrap(payload: Any) -> tuple[dict, dict]:
    """Split a payload into (alarm, envelope); ``envelope`` is ``{}`` for a bare alarm.

    A ``type`` the spec and Oracle do not know is refused with 400 ``unknown_message_type``,
    as the spec's handler does: it is not an alarm message at all.
    """
    if not isinstance(payload, dict):
        raise Rejected.invalid({"body": "expected a JSON object"})
    if payload.get("type") != "Notification":
        return _known_type(payload), {}
    message = payload.get("message")
    if message is None:
        raise Rejected.invalid({"message": "missing from the Notification envelope"})
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except RecursionError:  # the core refuses such a body with 400; here it hides inside a string
            raise Rejected.invalid({"message": "not valid JSON (nested too deeply)"}) from None
        except ValueError as exc:
            raise Rejected.invalid({"message": f"not valid JSON ({exc})"}) from exc
    if not isinstance(message, dict):
        raise Rejected.invalid({"message": "expected a JSON object (or a string holding one)"})
    return _known_type(message), payload


def _known_type(alarm: dict) -> dict:
    raw_type = alarm.get("type")
    if raw_type is None or isinstance(raw_type, str) and (raw_type in STATUS_BY_TYPE or raw_type in STATELESS_TYPES):
        return alarm
    raise Rejected(400, "unknown_message_type",
                   f"unknown message type {_text(raw_type)[:100]!r}: expected Notification, "
                   f"Subscription Confirmation or one of {', '.join(STATUS_BY_TYPE)}")


def to_alerts(payload: Any, *, received_at: datetime) -> list[Alert | Refused]:
    """The alerts a message describes: one per metric stream of each alarm it lists.

    A grouped message lists several streams (``dimensions[i]`` with ``metricValues[i]``); each
    becomes its own alert, so grouped and split subscriptions give the same alerts.  A message
    that names no stream (a recovery with empty ``dimensions``) gives one alert for the whole
    alarm.  ``[]`` for a message that carries no alarm state.  An alarm the message does not
    identify (no ``dedupeKey``, no ``alarmMetaData[].id``, no ``alarmId``) is one ``Refused``
    in place of its streams, so the other alarms of the message are kept; the message's
    ``messageId`` is its delivery id (``OciSource.delivery_id``), the alerts carry none.
    """
    alarm, envelope = unwrap(payload)
    raw_type = _text(alarm.get("type"))
    metas = _objects(alarm.get("alarmMetaData")) or [{}]
    alerts: list[Alert | Refused] = []
    for position, meta in enumerate(metas):
        raw_status = _text(alarm.get("status")) or _text(meta.get("status"))
        status = STATUS_BY_TYPE.get(raw_type) if raw_type else STATUS_BY_FLAT_STATUS.get(raw_status)
        if status is None:
            log.info("OCI message ignored: type %r, status %r is not an alarm state", raw_type, raw_status)
            continue
        dedupe_key = _text(alarm.get("dedupeKey"))
        alarm_id = _text(meta.get("id")) or _text(alarm.get("alarmId"))
        if not (dedupe_key or alarm_id):
            where = f"alarmMetaData[{position}].id" if meta else "dedupeKey"
            alerts.append(Refused({where: "missing: need dedupeKey, alarmMetaData[].id or alarmId"}))
            continue
        alarm_url = _text(meta.get("alarmUrl"))
        namespace = (_text(meta.get("namespace")) or _text(alarm.get("namespace"))
                     or next((_text(d.get("namespace")) for d in _objects(alarm.get("metricData"))), ""))
        common = {
            "namespace": namespace,
            "query": _text(meta.get("query")) or _text(alarm.get("query")),
            "region": _region(meta, alarm_id),
            "alarm_id": alarm_id,
            "alarm_status": raw_status,
            "oci_type": raw_type,
            "dedupe_key": dedupe_key,
            "notification_type": _text(alarm.get("notificationType")),
            "compartment_id": _text(alarm.get("compartmentId")),
            "reset": "true" if raw_type == "RESET" else "",
        }
        for dimensions, values in _streams(meta, alarm):
            stream = _lower_keys(dimensions)
            labels = {**common, **{DIMENSION + str(k): _text(v) for k, v in dimensions.items()}, **values}
            alerts.append(Alert(
                status=status,
                severity=_severity(meta.get("severity") or alarm.get("severity")),
                title=(_text(alarm.get("title")) or _text(alarm.get("displayName")) or _text(envelope.get("subject"))
                       or alarm_id or dedupe_key),
                description=(
                    _text(alarm.get("body")) or _text(meta.get("alarmSummary")) or _text(alarm.get("message"))
                ),
                resource=Resource(
                    id=_text(stream.get("resourceid")),
                    name=_text(stream.get("resourcedisplayname")) or _text(stream.get("resourcename")),
                    type=namespace or "oci.resource",
                ),
                occurred_at=_occurred_at(alarm, envelope, received_at),
                labels={name: value for name, value in labels.items() if value},
                links=[Link("OCI alarm", alarm_url)] if Link.allowed(alarm_url) else [],
            ))
    return alerts


def _streams(meta: Mapping, alarm: Mapping) -> list[tuple[dict, dict[str, str]]]:
    """(dimensions, ``metric.<expression>`` labels) per metric stream; one dimensionless stream
    for a message that names none.

    Oracle lists ``metricValues`` in the order of ``dimensions``; when the counts differ the
    pairing is unknown, so no value is attached rather than a wrong one.  The spec's flat
    form carries each stream in ``metricData`` (``dimensions``, ``name``, ``value``).
    """
    dimensions = _objects(meta.get("dimensions"))
    values = [_value_labels(entry.items()) for entry in _objects(meta.get("metricValues"))]
    if dimensions:
        return list(zip(dimensions, values if len(values) == len(dimensions) else [{}] * len(dimensions)))
    data = _objects(alarm.get("metricData"))
    if data and all(isinstance(entry.get("dimensions"), dict) and entry["dimensions"] for entry in data):
        return [(entry["dimensions"], _value_labels([(entry.get("name"), entry.get("value"))])) for entry in data]
    merged = {label: value for entry in values for label, value in entry.items()}
    merged.update(_value_labels((entry.get("name"), entry.get("value")) for entry in data))
    return [({}, merged)]


def _value_labels(pairs) -> dict[str, str]:
    return {f"metric.{_text(expr)}": _text(value) for expr, value in pairs if _text(expr)}


def _region(meta: Mapping, alarm_id: str) -> str:
    """The alarm's region, from what a firing and its recovery both carry: ``alarmUrl``'s
    ``region`` (``us-ashburn-1``), else the alarm OCID's segment (``iad``, or ``ap-seoul-1``).
    Never a stream's dimension, which a recovery may lack."""
    from_url = parse_qs(urlsplit(_text(meta.get("alarmUrl"))).query).get("region", [""])[0]
    return from_url.strip() or _region_of(alarm_id)


def _objects(value: Any) -> list[dict]:
    """The objects in a list field; any other value reads as an empty list, as every optional field does."""
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _lower_keys(value: Any) -> dict:
    """Dimension keys vary in case (resourceId / resourceID / resourceDisplayname)."""
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return "" if value is None or isinstance(value, (dict, list)) else str(value).strip()


def _severity(value: Any) -> str:
    severity = _text(value).lower()
    return severity if severity in SEVERITIES else DEFAULT_SEVERITY


def _region_of(alarm_id: str) -> str:
    """``ocid1.alarm.oc1.ap-seoul-1.<unique>`` -> ``ap-seoul-1`` (empty for global OCIDs)."""
    parts = alarm_id.split(".")
    return parts[3] if len(parts) >= 5 and parts[0].startswith("ocid") else ""


def _occurred_at(alarm: Mapping, envelope: Mapping, received_at: datetime) -> datetime:
    """The evaluation time: ``timestamp`` (with or without millis), else the epoch millis."""
    for value in (alarm.get("timestamp"), alarm.get("timestampEpochMillis"), envelope.get("timestamp")):
        parsed = _parse_time(value)
        if parsed is not None:
            return parsed
    return _utc(received_at)


def _parse_time(value: Any) -> Optional[datetime]:
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
        if isinstance(value, str) and value.strip():
            return _utc(datetime.fromisoformat(value.strip()))
    except (ValueError, OverflowError, OSError):
        log.warning("OCI message: unreadable time %r, using the next time field", value)
    return None


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a time without an offset is taken as UTC (OCI times are UTC)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
