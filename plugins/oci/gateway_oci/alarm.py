"""Normalises an OCI Monitoring alarm message, in any of the forms it arrives in, to an Alert.

Three forms reach the endpoint: Oracle's real alarm body (``dedupeKey``, ``type``,
``alarmMetaData``), the internal spec's SNS-like envelope (``type: Notification`` with
the alarm as a JSON string in ``message``), and the spec's flat alarm (``alarmId``,
``status``, ``metricData``).  One function reads them all so that the same alarm gives
the same alert whichever way it was wrapped.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from gateway import SEVERITIES, Alert, Rejected, Resource

log = logging.getLogger(__name__)

STATUS_BY_TYPE = {
    "OK_TO_FIRING": "firing",
    "REPEAT": "firing",
    "FIRING_TO_OK": "resolved",
    "RESET": "resolved",
}
"""Oracle's message types; RESET means the metric stream disappeared (resource gone or moved)."""

STATUS_BY_FLAT_STATUS = {"FIRING": "firing", "OK": "resolved"}
"""The spec's flat form carries only the alarm state."""

DEFAULT_SEVERITY = "warning"
"""For a severity outside CRITICAL/ERROR/WARNING/INFO: loud enough to be seen, not paging."""


def unwrap(payload: Any) -> tuple[dict, dict]:
    """Split a payload into (alarm, envelope); ``envelope`` is ``{}`` for a bare alarm."""
    if not isinstance(payload, dict):
        raise Rejected.invalid({"body": "expected a JSON object"})
    if payload.get("type") != "Notification":
        return payload, {}
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
    return message, payload


def to_alert(payload: Any, *, received_at: datetime, message_id: Optional[str]) -> Optional[Alert]:
    """The alert a message describes, or ``None`` for a message type that is not an alarm state.

    ``message_id`` is the ``X-OCI-NS-MessageId`` header; the envelope's ``messageId``
    stands in for it.  Raises ``Rejected.invalid`` naming each missing required field.
    """
    alarm, envelope = unwrap(payload)
    meta = _first_dict(alarm.get("alarmMetaData"))
    metric = _first_dict(alarm.get("metricData"))

    raw_type = _text(alarm.get("type"))
    raw_status = _text(alarm.get("status")) or _text(meta.get("status"))
    status = STATUS_BY_TYPE.get(raw_type) if raw_type else STATUS_BY_FLAT_STATUS.get(raw_status)
    if status is None:
        log.info("OCI message ignored: type %r, status %r is not an alarm state", raw_type, raw_status)
        return None

    dedupe_key = _text(alarm.get("dedupeKey"))
    alarm_id = _text(meta.get("id")) or _text(alarm.get("alarmId"))
    title = _text(alarm.get("title")) or _text(alarm.get("displayName")) or _text(envelope.get("subject"))
    missing = {}
    if not (dedupe_key or alarm_id):
        missing["dedupeKey"] = "missing: need dedupeKey, alarmMetaData[0].id or alarmId"
    if not title:
        missing["title"] = "missing: need title, displayName or subject"
    if missing:
        raise Rejected.invalid(missing)

    dimensions = _lower_keys(_first_dict(meta.get("dimensions")) or metric.get("dimensions"))
    namespace = _text(meta.get("namespace")) or _text(alarm.get("namespace")) or _text(metric.get("namespace"))
    labels = {
        "namespace": namespace,
        "query": _text(meta.get("query")) or _text(alarm.get("query")),
        "alarm_url": _text(meta.get("alarmUrl")),
        "region": _text(dimensions.get("region")) or _region_of(alarm_id),
        "alarm_id": alarm_id,
        "alarm_status": raw_status,
        "oci_type": raw_type,
        "dedupe_key": dedupe_key,
        "compartment_id": _text(alarm.get("compartmentId")),
        "reset": "true" if raw_type == "RESET" else "",
        **_metric_labels(meta, alarm),
    }
    return Alert(
        status=status,
        severity=_severity(alarm.get("severity") or meta.get("severity")),
        title=title,
        description=(
            _text(alarm.get("body")) or _text(meta.get("alarmSummary")) or _text(alarm.get("message"))
        ),
        resource=Resource(
            id=_text(dimensions.get("resourceid")),
            name=_text(dimensions.get("resourcedisplayname")) or _text(dimensions.get("resourcename")),
            type=namespace or "oci.resource",
        ),
        occurred_at=_occurred_at(alarm, envelope, received_at),
        labels={name: value for name, value in labels.items() if value},
        external_id=message_id or _text(envelope.get("messageId")) or None,
    )


def _objects(value: Any) -> list[dict]:
    """The objects in a list field; any other value reads as an empty list, as every optional field does."""
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _first_dict(value: Any) -> dict:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return value if isinstance(value, dict) else {}


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


def _metric_labels(meta: Mapping, alarm: Mapping) -> dict[str, str]:
    """``metric.<expression>`` for each value the alarm reports (real or flat form)."""
    labels = {}
    for entry in _objects(meta.get("metricValues")):
        labels.update({f"metric.{expr}": _text(value) for expr, value in entry.items()})
    for entry in _objects(alarm.get("metricData")):
        if _text(entry.get("name")):
            labels[f"metric.{_text(entry['name'])}"] = _text(entry.get("value"))
    return labels


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
