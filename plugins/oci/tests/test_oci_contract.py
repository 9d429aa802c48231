"""The conformance kit's contract, run on the OCI samples."""
import base64

from gateway.testing import SourceContract
from gateway_oci import OciSource


class TestOciContract(SourceContract):
    source_type = OciSource
    options = {"username": "ons", "password": "pa55-word", "confirm_hosts": ["127.0.0.1"]}
    headers = {"Authorization": "Basic " + base64.b64encode(b"ons:pa55-word").decode()}
    refused_headers = [{}, {"Authorization": "Basic " + base64.b64encode(b"ons:wrong").decode()}]
    recoveries = [("ok_to_firing.json", "firing_to_ok.json")]
