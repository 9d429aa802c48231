"""The conformance kit's contract, run on the WhaTap samples."""
from gateway.testing import SourceContract
from gateway_whatap import WhatapSource


class TestWhatapContract(SourceContract):
    source_type = WhatapSource
    options = {"token": "s3:cr3t"}
    headers = {"X-Webhook-Token": "s3:cr3t"}
    refused_headers = [{}, {"X-Webhook-Token": "wrong"}]
    recoveries = [("critical.json", "recovered_off.json"), ("critical.json", "recovered_message.json")]
