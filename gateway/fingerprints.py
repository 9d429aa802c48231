"""Stored fingerprints: namespaced per source, and grouped alerts sharing one prefix.

The core makes them from what a source plugin's ``fingerprint`` and ``group`` return; the incident
store, the problem periods and the database's group index read the prefix back.
"""
from __future__ import annotations

import hashlib
from typing import Optional

GROUP_PREFIX_LENGTH = 32
"""Hex digits of a grouped fingerprint that name its group (the other half names the alert)."""


def _digest(source_key: str, key: str) -> str:
    return hashlib.sha256(f"{source_key}\n{key}".encode("utf-8", "surrogatepass")).hexdigest()


def namespaced_fingerprint(source_key: str, plugin_fingerprint: str, group: Optional[str] = None) -> str:
    """The stored fingerprint: two sources never merge incidents, however alike their alerts.

    A grouped alert (``SourceType.group``) gets its group's half-digest followed by its own, so
    every fingerprint of a group shares one prefix and a group's members are one index range.
    """
    if group is None:
        return _digest(source_key, plugin_fingerprint)
    return _digest(source_key, group)[:GROUP_PREFIX_LENGTH] + _digest(source_key, plugin_fingerprint)[:GROUP_PREFIX_LENGTH]


def whole_group(fingerprint: str) -> Optional[str]:
    """The group prefix when ``fingerprint`` is its group's own (plugin fingerprint == group), else None.

    Such an alert speaks for the whole group: a recovery of it ends every member's problem.
    """
    head, tail = fingerprint[:GROUP_PREFIX_LENGTH], fingerprint[GROUP_PREFIX_LENGTH:]
    return head if len(fingerprint) == 2 * GROUP_PREFIX_LENGTH and head == tail else None


def group_fingerprint(fingerprint: str) -> str:
    """The fingerprint of the alert that speaks for ``fingerprint``'s whole group, if it is grouped;
    for an ungrouped fingerprint it names no problem (no digest repeats its own first half)."""
    return fingerprint[:GROUP_PREFIX_LENGTH] * 2
