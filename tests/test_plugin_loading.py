"""Plugins load through the ``gateway`` entry-point group, bundled ones exactly like third-party ones."""
from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points

import pytest
import testkit
from click.testing import CliRunner

from gateway.cli import main
from gateway.plugins import PluginError, build_registry

BUNDLED = {"itms": "alert-gateway", "whatap": "gateway-whatap", "oci": "gateway-oci", "spaceone": "gateway-spaceone",
           "alertmanager": "gateway-alertmanager"}
"""The plugins this repository ships.  Other installed plugins may be there too: the checks look only at these."""


def bundled(items: dict) -> dict:
    return {name: value for name, value in items.items() if name in BUNDLED}


def test_bundled_plugins_are_entry_points_of_their_own_distributions():
    found = {ep.name: ep.dist.name for ep in entry_points(group="gateway")}
    assert {name: found.get(name) for name in BUNDLED} == BUNDLED


def test_registry_attributes_every_type_to_its_distribution():
    registry = build_registry()
    plugins = {p.name: (p.distribution, p.source_types, p.sink_types) for p in registry.plugins}
    assert bundled(plugins) == {
        "itms": ("alert-gateway", [], ["itms"]),
        "whatap": ("gateway-whatap", ["whatap"], []),
        "oci": ("gateway-oci", ["oci"], []),
        "spaceone": ("gateway-spaceone", [], ["spaceone"]),
        "alertmanager": ("gateway-alertmanager", ["alertmanager"], []),
    }
    assert bundled(registry.source_types).keys() == {"whatap", "oci", "alertmanager"}
    assert bundled(registry.sink_types).keys() == {"itms", "spaceone"}


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """installed(name, entry_point, module_source): a distribution on sys.path for this test only."""
    modules = []

    def install(dist: str, module: str, source: str):
        modules.append(module)
        testkit.write_distribution(tmp_path / dist, dist, {module: module}, {module: source})
        monkeypatch.syspath_prepend(str(tmp_path / dist))

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def test_entry_point_that_fails_to_import_names_its_distribution(installed):
    installed("broken-plugin", "broken_gw_plugin", "import no_such_module_anywhere\n")
    with pytest.raises(PluginError) as caught:
        build_registry()
    assert str(caught.value) == (
        "plugin 'broken_gw_plugin' from distribution broken-plugin 1.0 failed to import (broken_gw_plugin): "
        "ModuleNotFoundError: No module named 'no_such_module_anywhere'")


def test_type_registered_twice_names_both_distributions(installed):
    installed("copycat-plugin", "copycat_gw_plugin", (
        "from gateway import SourceType, hookimpl\n"
        "class Copy(SourceType):\n    name = 'whatap'\n"
        "@hookimpl\ndef register_source_types(register):\n    register(Copy)\n"))
    with pytest.raises(PluginError) as caught:
        build_registry()
    head, _, owners = str(caught.value).partition(": by plugin ")
    assert head == "source type 'whatap' is registered twice"
    assert set(owners.split(" and by plugin ")) == {"'whatap' (gateway-whatap)", "'copycat_gw_plugin' (copycat-plugin)"}


def test_disabled_plugin_is_skipped(installed, monkeypatch):
    installed("broken-plugin", "broken_gw_plugin", "raise RuntimeError('never imported')\n")
    monkeypatch.setenv("GATEWAY_DISABLE_PLUGINS", "whatap, broken_gw_plugin")
    registry = build_registry()
    assert sorted(p.name for p in registry.plugins if p.name in BUNDLED) == ["alertmanager", "itms", "oci", "spaceone"]
    assert "broken_gw_plugin" not in {p.name for p in registry.plugins}
    assert "whatap" not in registry.source_types


def test_cli_and_health_list_the_same_plugins(client):
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == [p.as_dict() for p in build_registry().plugins]
    assert bundled({p["name"]: p["version"] for p in printed}) == dict.fromkeys(BUNDLED, "0.1.0")
    health = client.get("/health").json["plugins"]
    testkit_entry = {"name": "testkit", "distribution": "(registered in process)", "version": "",
                     "source_types": ["testsrc"], "sink_types": ["testhttp"], "samples": 0}
    assert health == printed + [testkit_entry]


def test_one_entry_point_name_in_two_distributions_names_both(installed):
    """Loading either would silently drop the other plugin."""
    installed("whatap-fork", "whatap", "")
    with pytest.raises(PluginError) as caught:
        build_registry()
    assert str(caught.value) in (
        f"plugin 'whatap' is declared by two distributions: {a} and {b}"
        for a, b in (("whatap-fork", "gateway-whatap"), ("gateway-whatap", "whatap-fork")))


@pytest.mark.parametrize(("source", "expected"), [
    ("from gateway import hookimpl\n@hookimpl\ndef register_sources(register):\n    pass\n",
     "unknown hook 'register_sources'"),
    ("from gateway import hookimpl\n@hookimpl\ndef register_sink_types(register):\n    raise RuntimeError('boom')\n",
     "failed in register_sink_types: RuntimeError: boom"),
], ids=["misspelt-hook", "hook-raises"])
def test_a_faulty_plugin_stops_start_up_naming_its_distribution(installed, source, expected):
    installed("faulty-plugin", "faulty_gw_plugin", source)
    with pytest.raises(PluginError) as caught:
        build_registry()
    assert str(caught.value).startswith("plugin 'faulty_gw_plugin' (faulty-plugin)")
    assert expected in str(caught.value)
