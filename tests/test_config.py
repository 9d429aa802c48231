"""gateway.yaml checking: operators fix their file from these messages, so lines and paths must be exact."""
import json
import textwrap
from datetime import timezone
from pathlib import Path

import pytest
import yaml
from marshmallow import ValidationError, fields, validate, validates_schema

from gateway import SinkOptions, SinkType, SourceOptions, SourceType, hookimpl
from gateway.fields import parse_size
from gateway.config import (
    ConfigError,
    load_config,
    redacted,
    secret_fields,
    summary,
    validate_source,
)
from gateway.plugins import build_registry


class FakeSourceOptions(SourceOptions):
    region = fields.String(load_default="seoul")
    hosts = fields.List(fields.String(validate=validate.Length(min=1, error="a host cannot be empty")),
                        load_default=list)
    password = fields.String(load_default=None, allow_none=True, metadata={"secret": True})


class FakeSource(SourceType):
    name = "fakesrc"
    options_schema = FakeSourceOptions


class FakeSinkOptions(SinkOptions):
    url = fields.String(required=True, metadata={"secret": True})
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    proxy = fields.String(load_default=None, allow_none=True)


class FakeSink(SinkType):
    name = "fakesink"
    options_schema = FakeSinkOptions


class PlainSink(SinkType):
    name = "fakeplain"


class FakePlugin:
    @hookimpl
    def register_source_types(self, register):
        register(FakeSource)

    @hookimpl
    def register_sink_types(self, register):
        register(FakeSink)
        register(PlainSink)


REGISTRY = build_registry(extra_plugins=[FakePlugin()])

# Appended to configs whose problems are elsewhere; starts on the config's next line.
SINKS_AND_ROUTE = """\
sinks:
  - name: tickets
    type: fakeplain
  - name: pager
    type: fakesink
    url: https://pager.example.com/hook
route:
  sinks: [tickets]
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Problems name the file as given, so loading "gateway.yaml" from tmp_path keeps them short."""
    monkeypatch.chdir(tmp_path)


def load(text, env=None):
    Path("gateway.yaml").write_text(text, encoding="utf-8")
    return load_config("gateway.yaml", REGISTRY, env or {})


def problems(text, env=None):
    with pytest.raises(ConfigError) as info:
        load(text, env)
    assert str(info.value) == "\n".join(map(str, info.value.problems))
    return [str(p) for p in info.value.problems]


VALID = """\
global:
  retention: 7d
  max_body_size: 512KiB
sources:
  - key: web-prod
    type: fakesrc
    name: 웹 운영
    token: ${WEB_TOKEN}
    hosts: [a.example.com]
  - key: batch
    type: fakesrc
    enabled: false
sinks:
  - name: tickets
    type: fakeplain
  - name: pager
    type: fakesink
    url: https://pager.example.com/${PAGER_PATH:-hook}
route:
  sinks: [tickets]
  reopen_window: 1h
  routes:
    - match: {source: "web-*", severity: [critical, error]}
      sinks: [tickets, pager]
      routes:
        - match: {status: resolved}
          reopen_window: 10m
    - match: {source_type: fakesrc}
      continue: true
"""


def test_valid_file_loads_with_types_defaults_and_inheritance():
    cfg = load(VALID, {"WEB_TOKEN": "t0k"})
    web, batch = cfg.sources["web-prod"], cfg.sources["batch"]
    assert (web.name, web.enabled, web.line, web.origin) == ("웹 운영", True, 5, "file")
    assert web.options == {"token": "t0k", "reopen_window": None, "region": "seoul",
                           "hosts": ["a.example.com"], "password": None}
    assert (batch.name, batch.enabled) == ("batch", False)
    assert cfg.sinks["pager"].options["url"] == "https://pager.example.com/hook"
    assert (cfg.sinks["pager"].options["max_age"], cfg.sinks["pager"].options["max_attempts"]) == (86400, None)
    assert (cfg.retention, cfg.max_body_size) == (7 * 86400, 512 * 1024)
    assert cfg.loaded_at.tzinfo is timezone.utc

    first, second = cfg.route.routes
    assert first.match == {"source": ("web-*",), "severity": ("critical", "error")}
    assert (first.line, first.reopen_window) == (23, 3600)
    nested = first.routes[0]
    assert (nested.sinks, nested.reopen_window) == (("tickets", "pager"), 600)
    assert (second.sinks, second.continue_) == (("tickets",), True)
    assert summary(cfg) == "OK: 2 sources, 2 sinks, 3 routes"


def test_global_defaults_apply_when_omitted():
    cfg = load(SINKS_AND_ROUTE)
    assert (cfg.retention, cfg.max_body_size) == (30 * 86400, 1024 * 1024)
    assert summary(cfg) == "OK: 0 sources, 2 sinks, 0 routes"


@pytest.mark.parametrize("text, size", [("1MiB", 1048576), ("1MB", 1000000), ("512KiB", 524288), (2048, 2048)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["1XB", "0", -1, True, "lots"])
def test_parse_size_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_yaml_syntax_error_reports_its_line():
    assert problems("sources:\n  - key: a\n    type: fake: src\n") == [
        "gateway.yaml:3: yaml: mapping values are not allowed here"
    ]


def test_unknown_top_level_key():
    assert problems(SINKS_AND_ROUTE + "receivers: []\n") == [
        "gateway.yaml:9: receivers: unknown key (expected: global, sources, sinks, route)"
    ]


def test_missing_route_is_required():
    assert problems("sinks: []\n") == ["gateway.yaml: route: required: the root route names the default sinks"]


def test_unknown_option_of_a_type_is_rejected_by_its_schema():
    assert problems("sources:\n  - key: a\n    type: fakesrc\n    regoin: busan\n" + SINKS_AND_ROUTE) == [
        "gateway.yaml:4: sources[0].regoin: unknown option for source type 'fakesrc' "
        "(known: burst, enabled, hosts, key, name, password, rate_limit, region, reopen_window, token, type)"
    ]


def test_invalid_option_values_point_at_their_lines_even_inside_lists():
    text = textwrap.dedent("""\
    sources:
      - key: a
        type: fakesrc
        reopen_window: soon
        hosts:
          - ok.example.com
          - ""
    """)
    assert problems(text + SINKS_AND_ROUTE) == [
        "gateway.yaml:4: sources[0].reopen_window: 'soon' is not a duration (use e.g. 30s, 10m, 2h, 7d)",
        "gateway.yaml:7: sources[0].hosts[1]: a host cannot be empty",
    ]


@pytest.mark.parametrize("value, message", [
    ("99999999999d", "a duration cannot be longer than 10 years"),
    ("1.0e+308", "a duration cannot be longer than 10 years"),
    (".inf", "a duration cannot be longer than 10 years"),
    (".nan", "not a duration"),
])
def test_a_duration_too_long_for_date_arithmetic_is_refused(value, message):
    """A huge reopen window was accepted, then overflowed timedelta on the webhook it applied to."""
    text = f"sources:\n  - key: a\n    type: fakesrc\n    reopen_window: {value}\n"
    assert problems(text + SINKS_AND_ROUTE) == [f"gateway.yaml:4: sources[0].reopen_window: {message}"]


def test_missing_required_option_points_at_the_entry():
    assert problems("sinks:\n  - name: tickets\n    type: fakesink\nroute:\n  sinks: [tickets]\n") == [
        "gateway.yaml:2: sinks[0].url: Missing data for required field."
    ]


def test_source_type_must_be_registered_and_key_well_formed():
    found = problems("sources:\n  - key: a b\n    type: nosuch\n" + SINKS_AND_ROUTE)
    assert found[0] == "gateway.yaml:2: sources[0].key: must be 1-64 characters of A-Z a-z 0-9 . _ -"
    assert found[1].startswith("gateway.yaml:3: sources[0].type: unknown source type 'nosuch' (registered: ")
    assert "fakesrc" in found[1]


def test_undefined_sink_in_a_nested_route():
    text = SINKS_AND_ROUTE + """\
  routes:
    - match: {severity: critical}
      routes:
        - match: {source: web}
          sinks: [tickets, spaceone-prd]
"""
    assert problems(text) == [
        "gateway.yaml:13: route.routes[0].routes[0].sinks[1]: undefined sink 'spaceone-prd' (defined: tickets, pager)"
    ]


def test_duplicate_source_key_names_the_first_line():
    text = "sources:\n  - key: a\n    type: fakesrc\n  - key: a\n    type: fakesrc\n"
    assert problems(text + SINKS_AND_ROUTE) == [
        "gateway.yaml:4: sources[1].key: duplicate source key 'a' (first defined on line 2)"
    ]


def test_duplicate_yaml_key_in_one_mapping():
    assert problems("sources:\n  - key: a\n    type: fakesrc\n    key: b\n" + SINKS_AND_ROUTE) == [
        "gateway.yaml:4: sources[0].key: duplicate key 'key' (first on line 2)"
    ]


def test_merge_key_overrides_are_not_duplicates():
    """``<<: *base`` then ``key: b`` is how YAML shares settings, not a repeated key."""
    text = "sources:\n  - &base {key: a, type: fakesrc, region: busan}\n  - <<: *base\n    key: b\n"
    cfg = load(text + SINKS_AND_ROUTE)
    assert cfg.sources["b"].options["region"] == "busan"


def test_yes_no_on_off_are_strings_but_boolean_options_still_accept_them():
    """YAML 1.2 booleans: ``key: no`` is the string "no" (YAML 1.1 made it False, "Not a valid string")."""
    text = textwrap.dedent("""\
    sources:
      - {key: no, type: fakesrc, region: off, hosts: [on, y, n, YES]}
      - {key: off, type: fakesrc, enabled: off}
      - {key: on, type: fakesrc, enabled: yes}
      - {key: t, type: fakesrc, enabled: FALSE}
      - {key: f, type: fakesrc, enabled: True}
    """)
    cfg = load(text + SINKS_AND_ROUTE)
    assert list(cfg.sources) == ["no", "off", "on", "t", "f"]
    assert cfg.sources["no"].options["region"] == "off"
    assert cfg.sources["no"].options["hosts"] == ["on", "y", "n", "YES"]
    assert [s.enabled for s in cfg.sources.values()] == [True, False, True, False, True]
    assert yaml.safe_load("a: no") == {"a": False}  # only our loader changed, not PyYAML's SafeLoader


def test_continue_accepts_the_words_enabled_accepts():
    routes = "".join(f"    - match: {{source: s{i}}}\n      continue: {word}\n"
                     for i, word in enumerate(["yes", "no", "on", "off", "true", "false", "${CONTINUE}"]))
    cfg = load(SINKS_AND_ROUTE + "  routes:\n" + routes, {"CONTINUE": "true"})
    assert [r.continue_ for r in cfg.route.routes] == [True, False, True, False, True, False, True]


@pytest.mark.parametrize("value", ["maybe", "2", "[true]", ""])
def test_continue_that_is_not_a_boolean_word(value):
    text = SINKS_AND_ROUTE + f"  routes:\n    - match: {{source: a}}\n      continue: {value}\n"
    assert problems(text) == ["gateway.yaml:11: route.routes[0].continue: must be true or false"]


def test_root_route_must_not_match_or_continue():
    text = SINKS_AND_ROUTE + "  match: {severity: critical}\n  continue: true\n"
    assert problems(text) == [
        "gateway.yaml:9: route.match: the root route must not have match: it receives every alert",
        "gateway.yaml:10: route.continue: the root route must not have continue: it receives every alert",
    ]


def test_bad_match_values_and_keys():
    text = SINKS_AND_ROUTE + """\
  routes:
    - match:
        severity: [critical, urgent]
        status: open
        team: db
"""
    assert problems(text) == [
        "gateway.yaml:11: route.routes[0].match.severity[1]: 'urgent' is not a severity "
        "(one of: critical, error, warning, info)",
        "gateway.yaml:12: route.routes[0].match.status: 'open' is not a status (one of: firing, resolved)",
        "gateway.yaml:13: route.routes[0].match.team: unknown match key (expected: source, source_type, "
        "severity, status)",
    ]


def test_match_on_a_source_not_in_the_file_is_allowed():
    """Sources created through the API are routed by key too, so the file cannot know them all."""
    cfg = load(SINKS_AND_ROUTE + "  routes:\n    - match: {source: made-at-runtime}\n")
    assert cfg.route.routes[0].match == {"source": ("made-at-runtime",)}


def test_every_problem_is_reported_at_once_in_file_order():
    text = textwrap.dedent("""\
    global:
      retention: forever
    sources:
      - key: a
        type: fakesrc
        token: ${MISSING}
    sinks:
      - name: tickets
        type: fakeplain
      - name: tickets
        type: fakeplain
    route:
      sinks: [pager]
      routes:
        - match: {severity: fatal}
    """)
    assert problems(text) == [
        "gateway.yaml:2: global.retention: 'forever' is not a duration (use e.g. 30s, 10m, 2h, 7d)",
        "gateway.yaml:6: sources[0].token: environment variable MISSING is not set",
        "gateway.yaml:10: sinks[1].name: duplicate sink name 'tickets' (first defined on line 8)",
        "gateway.yaml:13: route.sinks[0]: undefined sink 'pager' (defined: tickets)",
        "gateway.yaml:15: route.routes[0].match.severity: 'fatal' is not a severity "
        "(one of: critical, error, warning, info)",
    ]


def test_env_interpolation_with_defaults_and_dollar_escape():
    text = textwrap.dedent("""\
    sources:
      - key: a
        type: fakesrc
        name: ${NAME:-default name}
        token: pre-${TOKEN}-$${LITERAL}
        password: ${UNSET_PASSWORD:-}
    """)
    source = load(text + SINKS_AND_ROUTE, {"TOKEN": "xyz"}).sources["a"]
    assert source.name == "default name"
    assert source.options["token"] == "pre-xyz-${LITERAL}"
    assert source.options["password"] is None


def test_variable_that_expands_to_nothing_leaves_a_required_option_missing():
    """A sink whose URL comes from an unset ``${URL:-}`` must fail, pointing at the url line."""
    text = "sinks:\n  - name: pager\n    type: fakesink\n    url: ${URL:-}\nroute:\n  sinks: [pager]\n"
    assert problems(text) == ["gateway.yaml:4: sinks[0].url: Missing data for required field."]


def test_unset_variable_is_reported_once():
    """The unset variable is the problem; "missing required field" on the same option would be noise."""
    text = "sinks:\n  - name: pager\n    type: fakesink\n    url: ${PAGER_URL}\nroute:\n  sinks: [pager]\n"
    assert problems(text) == ["gateway.yaml:4: sinks[0].url: environment variable PAGER_URL is not set"]


def test_redaction_hides_every_secret():
    text = "sources:\n  - key: a\n    type: fakesrc\n    token: ${TOKEN}\n" + SINKS_AND_ROUTE
    cfg = load(text, {"TOKEN": "s3cret-token"})
    shown = redacted(cfg)
    dumped = json.dumps(shown)
    for secret in ("s3cret-token", "pager.example.com"):
        assert secret not in dumped
        assert secret not in repr(cfg)
    assert shown["sources"][0]["options"]["token"] == "***"
    assert shown["sources"][0]["options"]["password"] is None
    assert shown["sinks"][1]["options"]["url"] == "***"
    assert shown["route"]["sinks"] == ["tickets"]


def test_redaction_hides_header_values_and_url_passwords_of_any_option():
    """Header maps carry credentials whether or not the plugin marked them; so do URLs' userinfo."""
    text = "sources:\n  - key: a\n    type: fakesrc\n" + SINKS_AND_ROUTE.replace(
        "url: https://pager.example.com/hook",
        "url: https://pager.example.com/hook\n    headers: {Authorization: \"${AUTH}\", X-Team: ops}\n"
        "    proxy: http://proxyuser:${PROXY_PASSWORD}@proxy.example.com:3128/",
    )
    cfg = load(text, {"AUTH": "Bearer hdr-s3cret", "PROXY_PASSWORD": "pr0xy-s3cret"})
    shown = redacted(cfg)
    for secret in ("hdr-s3cret", "pr0xy-s3cret"):
        assert secret not in json.dumps(shown) and secret not in repr(cfg)
    options = shown["sinks"][1]["options"]
    assert options["headers"] == {"Authorization": "***", "X-Team": "***"}
    assert options["proxy"] == "http://proxyuser:***@proxy.example.com:3128/"
    assert cfg.sinks["pager"].options["headers"]["Authorization"] == "Bearer hdr-s3cret"  # only the view hides it


class CrossCheckedOptions(SourceOptions):
    """Written as a plugin writes it: plain @validates_schema checks, no marshmallow flag."""

    low = fields.Integer(load_default=0)
    high = fields.Integer(load_default=10)
    mode = fields.String(load_default="poll", validate=validate.OneOf(["poll", "push"]))

    @validates_schema
    def _low_not_above_high(self, data, **kwargs):
        if data.get("low", 0) > data.get("high", 10):
            raise ValidationError("must not be above high", "low")

    @validates_schema
    def _push_needs_a_range(self, data, **kwargs):
        if data["mode"] == "push" and data["low"] == data["high"]:  # a KeyError once mode failed
            raise ValidationError("push needs a range", "mode")


def test_cross_field_checks_run_even_when_a_field_failed():
    with pytest.raises(ValidationError) as info:
        CrossCheckedOptions().load({"low": 20, "mode": "pull"})
    assert info.value.messages == {"low": ["must not be above high"], "mode": ["Must be one of: poll, push."]}


def test_a_bundled_plugin_reports_its_cross_field_check_beside_a_field_error():
    """OCI's schema is unchanged: its credential pair is checked although confirm_timeout failed."""
    oci_options = build_registry().source_types["oci"].options_schema
    with pytest.raises(ValidationError) as info:
        oci_options().load({"password": "p", "confirm_timeout": "soon"})
    assert set(info.value.messages) == {"confirm_timeout", "username"}


def test_every_problem_of_a_plugin_schema_is_reported_with_its_line():
    class CrossCheckedSource(SourceType):
        name = "crosschecked"
        options_schema = CrossCheckedOptions

    class Plugin:
        @hookimpl
        def register_source_types(self, register):
            register(CrossCheckedSource)

    registry = build_registry(extra_plugins=[FakePlugin(), Plugin()])
    Path("gateway.yaml").write_text(
        "sources:\n  - key: a\n    type: crosschecked\n    low: 20\n    mode: pull\n" + SINKS_AND_ROUTE,
        encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config("gateway.yaml", registry, {})
    assert [str(p) for p in info.value.problems] == [
        "gateway.yaml:4: sources[0].low: must not be above high",
        "gateway.yaml:5: sources[0].mode: Must be one of: poll, push.",
    ]


def test_secret_fields_reads_schema_metadata():
    assert secret_fields(FakeSourceOptions) == {"token", "password"}
    assert secret_fields(FakeSinkOptions) == {"url"}


def test_validate_source_applies_the_file_rules_to_api_input():
    source = validate_source(REGISTRY, {"key": "api-1", "type": "fakesrc", "hosts": ["h.example.com"]})
    assert (source.key, source.name, source.origin, source.line) == ("api-1", "api-1", "api", None)
    assert source.options["hosts"] == ["h.example.com"]

    with pytest.raises(ValidationError) as info:
        validate_source(REGISTRY, {"key": "bad key!", "type": "fakesrc", "colour": "red"})
    assert set(info.value.messages) == {"key", "colour"}
    assert info.value.messages["colour"][0].startswith("unknown option for source type 'fakesrc'")


def test_unreadable_file_is_a_config_error():
    with pytest.raises(ConfigError, match="nosuch.yaml: \\(file\\): cannot read"):
        load_config("nosuch.yaml", REGISTRY, {})


SHIPPED = Path(__file__).resolve().parents[1] / "config" / "gateway.yaml"


def test_shipped_config_loads_with_no_environment():
    """A fresh checkout must start without any variable set."""
    cfg = load_config(SHIPPED, build_registry(), {})
    assert set(cfg.sources) == {"whatap-prod", "oci-seoul"}
    assert cfg.sources["whatap-prod"].options["token"] is None
    assert cfg.route.sinks == ("itms",)


@pytest.mark.parametrize("key", [".", ".."])
def test_a_source_key_that_is_a_dot_segment_is_refused(key):
    """Clients collapse ``/hooks/t/../`` to ``/hooks/``: no webhook could reach such a source."""
    found = problems(f"sources:\n  - key: '{key}'\n    type: fakesrc\n" + SINKS_AND_ROUTE)
    assert found == ["gateway.yaml:2: sources[0].key: must not be . or .. (a URL cannot carry it)"]
