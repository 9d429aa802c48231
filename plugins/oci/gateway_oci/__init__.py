"""OCI Notifications source plugin: registers the ``oci`` source type."""
from gateway import hookimpl
from gateway_oci.source import OciSource

__all__ = ["OciSource", "register_source_types"]


@hookimpl
def register_source_types(register):
    register(OciSource)
