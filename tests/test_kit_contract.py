"""The kit's contract suites fail a plugin that breaks the contract, naming the broken part.

A plugin type defined in a test file (not installed) runs the suites in a pytest of its own;
each flaw below must fail exactly the check that covers it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

FLAWED = '''
import json
from marshmallow import fields
from gateway import Alert, Rejected, RetryableError, SinkOptions, SinkType, SourceType
from gateway.testing import SinkContract, SourceContract

class UrlOptions(SinkOptions):
    url = fields.String(required=True)

class FlawedSource(SourceType):
    """Keys its fingerprint on the status, leaves its token header in the journal, crashes on a non-object."""
    name = "flawed"
    samples = "samples"

    def verify(self, request):
        if request.headers.get("X-Flawed-Token") != self.options["token"]:
            raise Rejected.unauthorized("wrong token")

    def parse(self, request):
        p = request.payload
        return [Alert(status=p.get("state", "firing"), severity="warning", title=p["title"], external_id=p["id"])]

    def fingerprint(self, alert):
        return json.dumps([alert.title, alert.status])

class FlawedSink(SinkType):
    """Retries what the destination refuses for good."""
    name = "flawedsink"
    options_schema = UrlOptions
    samples = "alerts"

    def deliver(self, delivery):
        import requests
        r = requests.post(self.options["url"], json={"title": delivery.alert.title}, timeout=5)
        if r.status_code >= 400:
            raise RetryableError(f"answered {r.status_code}")

class TestFlawedSource(SourceContract):
    source_type = FlawedSource
    options = {"token": "s3cret"}
    headers = {"X-Flawed-Token": "s3cret"}
    recoveries = [("firing.json", "resolved.json")]

class TestFlawedSink(SinkContract):
    sink_type = FlawedSink
    permanent_statuses = (400,)
'''


def test_each_flaw_fails_the_check_that_covers_it(tmp_path):
    (tmp_path / "samples").mkdir()
    for name, sample in {"firing.json": {"id": "1", "title": "disk"},
                         "resolved.json": {"id": "2", "title": "disk", "state": "resolved"}}.items():
        (tmp_path / "samples" / name).write_text(json.dumps(sample))
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "disk.json").write_text(json.dumps({"status": "firing", "severity": "error", "title": "d"}))
    (tmp_path / "test_flawed.py").write_text(textwrap.dedent(FLAWED))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "test_flawed.py"],
                         capture_output=True, text=True, cwd=tmp_path)
    failed = sorted({line.split("::")[-1].split(" ")[0].split("[")[0]
                     for line in run.stdout.splitlines() if line.startswith("FAILED")})
    assert failed == [
        "test_a_recovery_shares_its_firing_fingerprint",
        "test_answers_map_to_retryable_and_permanent_errors",
        "test_malformed_payloads_are_refused_not_crashed",
        "test_scrub_keeps_secrets_out_of_the_raw_journal",
    ], run.stdout[-3000:]
    assert "crashed with" in run.stdout and "the raw journal keeps ['s3cret']" in run.stdout
