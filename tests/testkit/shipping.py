"""What the packaging and deployment tests do to an installed gateway: the shipped config, one real
WhaTap webhook posted to it and read back through the API."""
from __future__ import annotations

import configparser
import json
import subprocess
import sys
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = ROOT / "config" / "gateway.yaml"
"""The config the image carries at /etc/gateway/gateway.yaml; its whatap-prod source needs no token when
WHATAP_PROD_TOKEN is unset."""
PLUGIN_DIRS = tuple(sorted(p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("plugins/*/setup.cfg")))
"""The bundled plugins: every directory under plugins/ that is a distribution."""


def _name(directory: Path) -> str:
    config = configparser.ConfigParser()
    config.read(directory / "setup.cfg")
    return config["metadata"]["name"]


DISTRIBUTIONS = (_name(ROOT), *(_name(ROOT / d) for d in PLUGIN_DIRS))
PAYLOAD = json.loads((ROOT / "plugins" / "whatap" / "tests" / "payloads" / "critical.json").read_text())


def version() -> str:
    return (ROOT / "VERSION").read_text().strip()


def assert_versions(output: str) -> None:
    """``gateway --version``: the core first, then every bundled plugin's distribution at the same version."""
    assert output.splitlines()[0] == f"alert-gateway {version()}"
    for distribution in DISTRIBUTIONS:
        assert f": {distribution} {version()}" in output, output


def post_webhook_and_read_back(base: str, admin_token: str) -> dict:
    """POST a WhaTap alert with a marker no other run used and return the incident the API lists for it."""
    marker = f"shipping-check-{uuid.uuid4().hex[:12]}"
    payload = {**PAYLOAD, "title": f"[Critical][JAVA][payments-prod][pay-api][{marker}]", "uuid": str(uuid.uuid4())}
    posted = requests.post(f"{base}/hooks/whatap/whatap-prod/", json=payload, timeout=10)
    assert posted.status_code == 202, posted.text
    listed = requests.get(f"{base}/api/incidents", params={"q": marker}, timeout=10,
                          headers={"Authorization": f"Bearer {admin_token}"})
    assert listed.status_code == 200, listed.text
    [incident] = listed.json()["items"]
    assert marker in incident["title"] and incident["severity"] == "critical", incident
    return incident


def kustomized(directory: str) -> list[dict]:
    """The resources ``kubectl kustomize deploy/kubernetes/<directory>`` builds (kubectl from the test extra)."""
    import yaml

    kubectl = Path(sys.executable).with_name("kubectl")
    built = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "kubernetes" / directory)],
                           check=True, capture_output=True, text=True, timeout=60).stdout
    return list(yaml.safe_load_all(built))
