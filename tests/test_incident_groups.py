"""Alert groups (``SourceType.group``), through the HTTP app on both databases.

Members keep their own incidents; the group's own alert (fingerprint == group) speaks for all
of them.  The testkit source takes ``problem`` as the fingerprint and ``group`` as the group.
"""
from __future__ import annotations

import itertools

import pytest

from gateway.fingerprints import namespaced_fingerprint, whole_group

ids = itertools.count(1)


@pytest.fixture
def send(client):
    def send(problem: str, status: str = "firing", at: str = "2025-01-01T00:00:00+00:00", group: str = "g"):
        body = {"id": next(ids), "title": problem, "problem": problem, "status": status, "at": at}
        response = client.post("/hooks/testsrc/src/", json=body if group is None else {**body, "group": group})
        assert response.status_code == 202, response.json

    return send


def statuses(api) -> dict:
    """Title -> status, for tests where each title is one incident."""
    return {i["title"]: i["status"] for i in api.get("/api/incidents", query_string={"per_page": 100}).json["items"]}


def test_the_groups_own_recovery_resolves_every_member_and_nothing_else(send, api):
    for member in ("a", "b"):
        send(member)
    send("a", group="other")      # same problem name in another group: another incident
    send("a", group=None)         # and ungrouped: another again
    send("g", status="resolved", at="2025-01-01T00:05:00+00:00")
    found = {i["fingerprint"]: i["status"] for i in api.get("/api/incidents").json["items"]}
    assert found == {
        namespaced_fingerprint("src", "a", "g"): "resolved", namespaced_fingerprint("src", "b", "g"): "resolved",
        namespaced_fingerprint("src", "a", "other"): "triggered", namespaced_fingerprint("src", "a"): "triggered",
    }


def test_a_members_recovery_resolves_only_that_member(send, api):
    send("a")
    send("b")
    send("a", status="resolved", at="2025-01-01T00:05:00+00:00")
    assert statuses(api) == {"a": "resolved", "b": "triggered"}


def test_a_group_recovery_older_than_a_members_latest_firing_leaves_it_open(send, api):
    send("a", at="2025-01-01T00:10:00+00:00")
    send("b", at="2025-01-01T00:00:00+00:00")
    send("g", status="resolved", at="2025-01-01T00:05:00+00:00")
    assert statuses(api) == {"a": "triggered", "b": "resolved"}


def test_grouped_fingerprints_share_the_groups_prefix():
    member, own = namespaced_fingerprint("src", "a", "g"), namespaced_fingerprint("src", "g", "g")
    assert member[:32] == own[:32] == whole_group(own)
    assert whole_group(member) is None and whole_group(namespaced_fingerprint("src", "g")) is None
    assert namespaced_fingerprint("other", "g", "g")[:32] != own[:32]


def test_a_late_firing_of_a_member_never_open_opens_nothing_after_its_groups_recovery(send, api):
    """The group's recovery resolved the members that were open; another member's firing from
    before it, delivered after it, opens nothing either, and a firing after it does."""
    send("a")
    send("b")
    send("g", status="resolved", at="2025-01-01T00:05:00+00:00")
    send("c", at="2025-01-01T00:03:00+00:00")
    assert statuses(api) == {"a": "resolved", "b": "resolved"}
    send("c", at="2025-01-01T00:06:00+00:00")
    assert statuses(api) == {"a": "resolved", "b": "resolved", "c": "triggered"}


def test_a_group_recovery_with_nothing_open_ends_every_member_even_after_a_members_own(send, api):
    send("a")
    send("a", status="resolved", at="2025-01-01T00:01:00+00:00")
    send("g", status="resolved", at="2025-01-01T00:05:00+00:00")
    send("c", at="2025-01-01T00:03:00+00:00")
    send("a", at="2025-01-01T00:04:00+00:00")
    assert statuses(api) == {"a": "resolved"}


def test_a_members_own_recovery_says_nothing_of_the_others(send, api):
    send("a")
    send("a", status="resolved", at="2025-01-01T00:05:00+00:00")
    send("b", at="2025-01-01T00:03:00+00:00")
    assert statuses(api) == {"a": "resolved", "b": "triggered"}
