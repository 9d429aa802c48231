"""The docs are part of the contract: they fail here when the code moves without them.

docs/plugins.md: a ``### name(args)`` heading for every hookspec and a ``### Class.method(args)`` heading for
every public method of the contract's classes, with the code's argument names; every public name mentioned.
docs/configuration.md: every key the config loader accepts, in the reference block of its section.
Each check is a function returning problems, and the ``*_catches_*`` tests prove it can fail.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import gateway
from gateway import config as gateway_config
from gateway import contracts, hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"
PLUGINS_MD = DOCS / "plugins.md"
CONFIGURATION_MD = DOCS / "configuration.md"

SIGNATURE_HEADING = re.compile(r"^###\s+`?(?P<name>[A-Za-z_][\w.]*)\((?P<args>[^)]*)\)`?\s*$", re.MULTILINE)
CONTRACT_CLASSES = (contracts.SourceType, contracts.SinkType, contracts.InlineSinkType, contracts.Transaction)


# --- what the code defines --------------------------------------------------------------


def hookspecs_in_code() -> dict[str, list[str]]:
    """Hook name -> argument names, for every function carrying the ``gateway`` hookspec marker."""
    specs = {
        name: list(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and getattr(fn, f"{hookspecs.NAME}_spec", None) is not None
    }
    assert specs, "found no hookspecs in gateway.hookspecs"
    return specs


def contract_methods_in_code() -> dict[str, list[str]]:
    """``Class.method`` -> argument names (without self), for public methods of ``CONTRACT_CLASSES``."""
    methods = {}
    for cls in CONTRACT_CLASSES:
        for name, fn in vars(cls).items():
            if name.startswith("_") or not inspect.isfunction(fn):
                continue
            methods[f"{cls.__name__}.{name}"] = list(inspect.signature(fn).parameters)[1:]
    assert methods, "found no public methods in the contract's classes"
    return methods


def _schema_keys(*schemas) -> set[str]:
    return {f.data_key or name for schema in schemas for name, f in schema().fields.items()}


def config_keys_by_section() -> dict[str, set[str]]:
    """configuration.md heading -> keys the loader accepts there, read from gateway/config/."""
    return {
        "Top level": set(gateway_config.TOP_LEVEL_KEYS),
        "`global`": _schema_keys(gateway_config.GlobalFields),
        "`<source>`": _schema_keys(gateway_config.SourceFields, contracts.SourceOptions),
        "`<sink>`": _schema_keys(gateway_config.SinkFields, contracts.SinkOptions),
        "`<route>`": set(gateway_config.ROUTE_KEYS),
        "`<match>`": set(gateway_config.MATCH_KEYS),
    }


# --- the checks (text in, problems out) ------------------------------------------------------


def _documented_signatures(text: str) -> dict[str, list[str]]:
    found = {}
    for m in SIGNATURE_HEADING.finditer(text):
        args = [a.strip() for a in m["args"].split(",") if a.strip()]
        found[m["name"]] = [re.split(r"[:=]", a, maxsplit=1)[0].strip().lstrip("*") for a in args]
    return found


def signature_problems(text: str, expected: dict[str, list[str]], *, dotted: bool) -> list[str]:
    """Missing or drifted ``### name(args)`` headings, and headings for things the code no longer has."""
    documented = {n: a for n, a in _documented_signatures(text).items() if ("." in n) == dotted}
    problems = []
    for name, args in expected.items():
        if name not in documented:
            problems.append(f"no '### {name}({', '.join(args)})' heading")
        elif documented[name] != args:
            problems.append(f"'### {name}({', '.join(documented[name])})' but the code says ({', '.join(args)})")
    prefixes = tuple(f"{cls.__name__}." for cls in CONTRACT_CLASSES)
    for name in documented:
        if name not in expected and (not dotted or name.startswith(prefixes)):
            problems.append(f"'### {name}(...)' documents something the code does not define")
    return problems


def _code_text(text: str) -> str:
    """Headings, fenced blocks and inline code: where an identifier counts as mentioned."""
    parts = re.findall(r"^```.*?^```", text, re.MULTILINE | re.DOTALL)
    parts += re.findall(r"^#+ .*$", text, re.MULTILINE)
    parts += re.findall(r"`[^`\n]+`", re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL))
    return "\n".join(parts)


def unmentioned_names(text: str, names) -> list[str]:
    code = _code_text(text)
    return [name for name in names if not re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", code)]


def _section(text: str, heading: str) -> str | None:
    """The text under ``## heading`` / ``### heading`` up to the next heading of any level.

    A ``#`` line inside a fenced block is a YAML comment, not a heading.
    """
    body, inside, fenced = None, False, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            if inside:
                break
            inside = re.fullmatch(rf"#{{2,3}} {re.escape(heading)}\s*", line) is not None
            body = "" if inside else body
            continue
        if inside:
            body += line
    return body


def _reference_keys(section: str) -> set[str]:
    """Keys written as ``key:`` / ``[ key: ...`` / ``- key:`` at the start of a line in fenced blocks."""
    keys = set()
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", section, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            m = re.match(r"^[\s\[\-]*([A-Za-z_][\w]*):(\s|$)", line)
            if m and not line.lstrip().startswith("#"):
                keys.add(m[1])
    return keys


def config_problems(text: str, expected: dict[str, set[str]]) -> list[str]:
    problems = []
    for heading, keys in expected.items():
        section = _section(text, heading)
        if section is None:
            problems.append(f"no section headed {heading!r}")
            continue
        for key in sorted(keys - _reference_keys(section)):
            problems.append(f"section {heading!r} does not document `{key}:` in its reference block")
    return problems


# --- the docs as they are ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugins_md() -> str:
    return PLUGINS_MD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def configuration_md() -> str:
    return CONFIGURATION_MD.read_text(encoding="utf-8")


def test_every_hookspec_is_documented_with_its_signature(plugins_md):
    assert signature_problems(plugins_md, hookspecs_in_code(), dotted=False) == []


def test_every_contract_method_is_documented_with_its_signature(plugins_md):
    assert signature_problems(plugins_md, contract_methods_in_code(), dotted=True) == []


def test_every_public_name_is_mentioned(plugins_md):
    assert unmentioned_names(plugins_md, gateway.__all__) == []


def test_every_config_key_is_documented(configuration_md):
    assert config_problems(configuration_md, config_keys_by_section()) == []


# --- the checks can fail ------------------------------------------------------------------------------


def test_hook_check_catches_a_missing_heading_and_a_drifted_signature(plugins_md):
    specs = hookspecs_in_code()
    name, args = next(iter(specs.items()))
    heading = f"### {name}({', '.join(args)})"
    assert heading in plugins_md
    assert signature_problems(plugins_md.replace(heading, "### gone"), specs, dotted=False)
    assert signature_problems(plugins_md.replace(heading, f"### {name}(registrar)"), specs, dotted=False)
    assert signature_problems(plugins_md, {**specs, "register_widgets": ["register"]}, dotted=False)


def test_method_check_catches_a_missing_heading_a_drifted_signature_and_a_stale_one(plugins_md):
    methods = contract_methods_in_code()
    heading = f"### SinkType.deliver({', '.join(methods['SinkType.deliver'])})"
    assert heading in plugins_md
    assert signature_problems(plugins_md.replace(heading, "### deliver"), methods, dotted=True)
    assert signature_problems(plugins_md.replace(heading, "### SinkType.deliver(alert)"), methods, dotted=True)
    stale = plugins_md + "\n### SourceType.normalize(request)\n"
    assert signature_problems(stale, methods, dotted=True)


def test_name_check_catches_an_unmentioned_name(plugins_md):
    assert unmentioned_names(plugins_md, ["NotAThingInTheDocs"]) == ["NotAThingInTheDocs"]
    assert unmentioned_names("prose mentions Alert only outside code", ["Alert"]) == ["Alert"]


def test_config_check_catches_an_undocumented_key(configuration_md):
    keys = config_keys_by_section()
    assert config_problems(configuration_md, {**keys, "`<sink>`": keys["`<sink>`"] | {"timeout_ms"}})
    without_retention = re.sub(r"^\[ retention:.*$", "", configuration_md, flags=re.MULTILINE)
    assert config_problems(without_retention, keys)
