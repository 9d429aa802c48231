"""Builds the plugin manager and the registry of source and sink types and of plugin blueprints.

Every plugin, the bundled ones and the built-in incident store included, is found the
same way: through the ``gateway`` entry-point group.  Loading happens once per app in
``create_app``, never per request.
"""
from __future__ import annotations

import importlib.metadata
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Iterable, Optional

import pluggy
from flask import Blueprint

from gateway import hookspecs
from gateway.contracts import PluginError, SinkType, SourceType

log = logging.getLogger(__name__)


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    source_types: list[str] = field(default_factory=list)
    sink_types: list[str] = field(default_factory=list)
    blueprints: list[str] = field(default_factory=list)
    samples: int = 0
    """Sample files its types ship (``SourceType.samples``, ``SinkType.samples``)."""

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "source_types": self.source_types,
            "sink_types": self.sink_types,
            "samples": self.samples,
        }


@dataclass
class Registry:
    """Source and sink types and plugin blueprints by name, and which plugin registered each."""

    source_types: dict[str, type[SourceType]] = field(default_factory=dict)
    sink_types: dict[str, type[SinkType]] = field(default_factory=dict)
    blueprints: dict[str, Blueprint] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)

    def owner(self, attr: str, name: str) -> PluginInfo:
        """The plugin that registered ``name`` in ``attr`` (``"blueprints"``, ``"sink_types"``...)."""
        return next(p for p in self.plugins if name in getattr(p, attr))


@dataclass(frozen=True)
class _Registration:
    """What one registration hook registers: where it goes, and what ``register`` accepts."""

    hook: str
    attr: str
    """The ``Registry`` and ``PluginInfo`` attribute."""
    kind: str
    base: type
    classes: bool
    """Subclasses of ``base`` (types), or instances of it (blueprints)."""

    def accepts(self, obj: object) -> bool:
        if self.classes:
            return isinstance(obj, type) and issubclass(obj, self.base)
        return isinstance(obj, self.base)


_REGISTRATIONS = (
    _Registration("register_source_types", "source_types", "source type", SourceType, classes=True),
    _Registration("register_sink_types", "sink_types", "sink type", SinkType, classes=True),
    _Registration("register_blueprints", "blueprints", "blueprint", Blueprint, classes=False),
)


def _distributions() -> dict[str, importlib.metadata.Distribution]:
    """Entry-point name -> the distribution that declares it."""
    owners: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != hookspecs.NAME:
                continue
            other = owners.get(ep.name)
            if other is not None and other.metadata["Name"] != dist.metadata["Name"]:
                # Keeping either one would silently drop the other plugin.
                raise PluginError(
                    f"plugin {ep.name!r} is declared by two distributions: "
                    f"{other.metadata['Name']} and {dist.metadata['Name']}"
                )
            owners.setdefault(ep.name, dist)  # the first on sys.path wins, as for imports
    return owners


def _load_entry_points(pm: pluggy.PluginManager, blocked: set[str]) -> dict[str, PluginInfo]:
    infos = {}
    for name, dist in sorted(_distributions().items()):
        dist_name = dist.metadata["Name"]
        if name in blocked:
            log.info("plugin %s (%s) disabled by GATEWAY_DISABLE_PLUGINS", name, dist_name)
            continue
        ep = next(ep for ep in dist.entry_points if ep.group == hookspecs.NAME and ep.name == name)
        try:
            module = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} from distribution {dist_name} {dist.version} "
                f"failed to import ({ep.value}): {exc.__class__.__name__}: {exc}"
            ) from exc
        _register(pm, module, name, dist_name)
        infos[name] = PluginInfo(name, dist_name, dist.version)
    return infos


def _register(pm: pluggy.PluginManager, module: object, name: str, dist_name: str) -> None:
    try:
        pm.register(module, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"plugin {name!r} from distribution {dist_name}: {exc}") from exc


def build_registry(extra_plugins: Iterable[ModuleType | object] = (),
                   disabled: Optional[Iterable[str]] = None) -> Registry:
    """Load entry points (plus ``extra_plugins``, registered the same way) and collect what they register.

    ``disabled`` entry points are skipped by name; by default those of ``GATEWAY_DISABLE_PLUGINS``.
    """
    if disabled is None:
        from gateway.settings import Settings  # it imports gateway.config, which imports this module

        disabled = Settings.from_environ().disabled_plugins
    pm = pluggy.PluginManager(hookspecs.NAME)
    pm.add_hookspecs(hookspecs)
    infos = _load_entry_points(pm, set(disabled))
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", type(plugin).__name__)
        _register(pm, plugin, name, "(registered in process)")
        infos[name] = PluginInfo(name, "(registered in process)", "")
    try:
        pm.check_pending()  # a hookimpl whose name matches no hook: a typo in a plugin
    except pluggy.PluginValidationError as exc:
        info = infos[pm.get_name(exc.plugin)]
        raise PluginError(f"plugin {info.name!r} ({info.distribution}): {exc}") from exc

    registry = Registry(plugins=list(infos.values()))
    for plugin_name, _ in pm.list_name_plugin():
        info = infos[plugin_name]
        others = [p for n, p in pm.list_name_plugin() if n != plugin_name]
        # One plugin at a time, so that everything registered is attributed to its plugin.
        for registration in _REGISTRATIONS:
            hook = registration.hook
            try:
                pm.subset_hook_caller(hook, others)(register=_registrar(registry, registration, info))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"plugin {info.name!r} ({info.distribution}) failed in {hook}: "
                                  f"{exc.__class__.__name__}: {exc}") from exc
    return registry


def sample_files(cls: type) -> list[Path]:
    """The JSON files in the directory a type names in ``samples``, by name."""
    if not cls.samples:
        return []
    directory = Path(inspect.getfile(cls)).parent / cls.samples
    return sorted(directory.glob("*.json"))


def _registrar(registry: Registry, registration: _Registration, info: PluginInfo):
    attr, kind = registration.attr, registration.kind
    table: dict = getattr(registry, attr)

    def register(obj: object) -> None:
        if not registration.accepts(obj):
            expected = registration.base.__name__ + (" subclass" if registration.classes else "")
            raise PluginError(f"plugin {info.name!r} ({info.distribution}) registered {obj!r}, not a {expected}")
        name = getattr(obj, "name", None)
        if not name or not isinstance(name, str):
            raise PluginError(f"plugin {info.name!r} ({info.distribution}): {obj!r} has no name")
        if name in table:
            owner = registry.owner(attr, name)
            raise PluginError(
                f"{kind} {name!r} is registered twice: by plugin {owner.name!r} "
                f"({owner.distribution}) and by plugin {info.name!r} ({info.distribution})"
            )
        table[name] = obj
        getattr(info, attr).append(name)
        if registration.classes:
            info.samples += len(sample_files(obj))

    return register
