"""SpaceONE (Cloudforet) forwarder sink: registers the ``spaceone`` sink type."""
from gateway import hookimpl
from gateway_spaceone.sink import SpaceoneOptions, SpaceoneSink, event_body

__all__ = ["SpaceoneOptions", "SpaceoneSink", "event_body"]


@hookimpl
def register_sink_types(register):
    register(SpaceoneSink)
