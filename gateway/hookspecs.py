"""The plugin hooks.  Each docstring is the contract; ``docs/plugins.md`` documents each one.

Plugins do not handle webhooks through hooks: they register *types* here, and the core
dispatches by name to the registered classes (see ``gateway.contracts``).  A plugin with
its own HTTP API or console pages registers Flask blueprints here too.
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


@hookspec
def register_blueprints(register):
    """Add HTTP routes and console pages: call ``register(blueprint)`` once per Flask ``Blueprint``.

    A plugin may register several, each under any ``url_prefix``; a disabled plugin's
    routes do not exist (404).  Views use ``gateway.views`` (roles, JSON errors, paging,
    transactions), not the core's web modules.  A blueprint name registered by two plugins,
    or taken by the core, and a route the core already serves, stop start-up.
    """
