"""The GATEWAY_* environment is read once, into Settings, and what is built is built from them."""
from __future__ import annotations

import testkit

from gateway.app import create_app
from gateway.config import DEFAULT_PATH
from gateway.settings import Settings


def test_every_variable_is_read_into_settings():
    settings = Settings.from_environ({
        "GATEWAY_CONFIG": "/etc/gw.yaml", "GATEWAY_DATABASE_URL": "postgresql+psycopg://db/gw",
        "GATEWAY_ADMIN_TOKEN": "t", "GATEWAY_DISABLE_PLUGINS": " whatap, ,oci ", "GATEWAY_DISPATCHER": "0",
        "GATEWAY_LAST_GOOD_CONFIG": "/tmp/last.yaml", "GATEWAY_SERVED_BY_GUNICORN": "1",
        "GATEWAY_THREADS": "4", "GATEWAY_KEEPALIVE_REQUESTS": "7", "TOKEN_FOR_YAML": "s3cret",
    })
    assert (settings.config_path, settings.database_url, settings.admin_token) == (
        "/etc/gw.yaml", "postgresql+psycopg://db/gw", "t")
    assert settings.disabled_plugins == {"whatap", "oci"} and settings.dispatcher is False
    assert (settings.last_good_config, settings.served_by_gunicorn) == ("/tmp/last.yaml", True)
    assert (settings.threads, settings.keepalive_requests) == (4, 7)
    assert settings.env["TOKEN_FOR_YAML"] == "s3cret" and "s3cret" not in repr(settings)


def test_every_switch_reads_off_the_same_way():
    """0, false and no, in any case, turn each on/off variable off; another value turns it on."""
    for off in ("0", "false", "No", " FALSE "):
        settings = Settings.from_environ({"GATEWAY_DISPATCHER": off, "GATEWAY_SERVED_BY_GUNICORN": off,
                                          "GATEWAY_GROUP_COMMIT": off})
        assert (settings.dispatcher, settings.served_by_gunicorn, settings.group_commit) == (False, False, False), off
    for on in ("1", "true", "yes"):
        settings = Settings.from_environ({"GATEWAY_DISPATCHER": on, "GATEWAY_SERVED_BY_GUNICORN": on,
                                          "GATEWAY_GROUP_COMMIT": on})
        assert (settings.dispatcher, settings.served_by_gunicorn, settings.group_commit) == (True, True, True), on


def test_unset_variables_give_the_defaults():
    settings = Settings.from_environ({})
    assert (settings.config_path, settings.admin_token, settings.disabled_plugins) == (DEFAULT_PATH, None, set())
    assert settings.database_url.startswith("sqlite:///") and settings.dispatcher is True
    assert (settings.threads, settings.keepalive_requests, settings.served_by_gunicorn) == (None, 100, False)


def test_the_app_is_built_from_the_settings_it_is_given(database_url, write_config, monkeypatch):
    """Not from the process environment: ${VAR} reads the settings' env, plugins their disabled list."""
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "from-the-environment")
    monkeypatch.delenv("SOURCE_KEY", raising=False)
    config = write_config("sources:\n  - key: ${SOURCE_KEY}\n    type: testsrc\nsinks:\n  - name: itms\n"
                          "    type: itms\nroute:\n  sinks: [itms]\n")
    settings = Settings(config_path=config, database_url=database_url, admin_token="given",
                        disabled_plugins=frozenset({"spaceone"}), env={"SOURCE_KEY": "from-settings"})
    app = create_app(settings=settings, extra_plugins=[testkit])
    gateway = app.extensions["gateway"]
    try:
        assert list(gateway.runtime.snapshot.config.sources) == ["from-settings"]
        assert "spaceone" not in gateway.registry.sink_types
        client = app.test_client()
        assert client.get("/api/config", headers={"Authorization": "Bearer given"}).status_code == 200
        assert client.get("/api/config", headers={"Authorization": "Bearer from-the-environment"}).status_code == 401
    finally:
        gateway.engine.dispose()
