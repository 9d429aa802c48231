"""The plugin hooks.  Each docstring is the contract; ``docs/plugins.md`` documents each one.

Plugins do not handle requests through hooks: they register *types* here, and the core
dispatches by name to the registered classes (see ``gateway.contracts``).
"""
from pluggy import HookimplMarker, HookspecMarker

NAME = "gateway"
"""Names the plugin manager, the hook markers and the entry-point group."""

hookspec = HookspecMarker(NAME)
hookimpl = HookimplMarker(NAME)


@hookspec
def register_source_types(register):
    """Register webhook formats: call ``register(cls)`` once per ``SourceType`` subclass.

    ``cls.name`` becomes the URL segment ``/hooks/<name>/<key>/`` and a source's ``type:``
    in gateway.yaml.  A name registered by two plugins stops start-up.
    """


@hookspec
def register_sink_types(register):
    """Register destinations: call ``register(cls)`` once per ``SinkType`` subclass.

    ``cls.name`` becomes a sink's ``type:`` in gateway.yaml.  A name registered by two
    plugins stops start-up.
    """
