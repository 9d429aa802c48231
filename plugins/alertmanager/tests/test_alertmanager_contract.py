"""The conformance kit's contract, run on the Alertmanager samples."""
from gateway.testing import SourceContract
from gateway_alertmanager import AlertmanagerSource


class TestAlertmanagerContract(SourceContract):
    source_type = AlertmanagerSource
    options = {"token": "t0ken"}
    headers = {"Authorization": "Bearer t0ken"}
    refused_headers = [{}, {"Authorization": "Bearer wrong"}]
    recoveries = [("group_firing.json", "group_resolved.json")]
