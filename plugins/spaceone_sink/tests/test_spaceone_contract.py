"""The conformance kit's contract, run on the SpaceONE sample alerts."""
from gateway.testing import SinkContract
from gateway_spaceone import SpaceoneSink


class TestSpaceoneContract(SinkContract):
    sink_type = SpaceoneSink
    retryable_statuses = (429, 500, 502, 503)
    permanent_statuses = (401, 403, 404, 422)

    def options(self, url):
        return {"url": f"{url}/monitoring/v1/webhook/webhook-abc123/AccessKey16chars/events"}
