"""deploy/: every Kubernetes manifest, as written and as kustomize builds it, passes
``kubernetes-validate --strict``, and the pieces fit together (selectors, probes, commands, config)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit.shipping import ROOT, kustomized

KUBERNETES = ROOT / "deploy" / "kubernetes"
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")
GATEWAY = Path(sys.executable).with_name("gateway")


def validate(files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([VALIDATE, "--strict", *map(str, files)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, dict[tuple[str, str], dict]]:
    return {overlay: {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomized(overlay)}
            for overlay in ("base", "overlays/production")}


def test_every_manifest_passes_strict_validation(built, tmp_path):
    written = [p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml"]
    outputs = []
    for overlay, resources in built.items():
        out = tmp_path / f"{overlay.replace('/', '-')}.yaml"
        out.write_text(yaml.safe_dump_all(resources.values()))
        outputs.append(out)
    done = validate(written + outputs)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(written) + sum(map(len, built.values()))


def test_strict_validation_refuses_a_misspelt_field(tmp_path):
    """The check above means something: an unknown field (here ``replica``) fails."""
    deployment = yaml.safe_load((KUBERNETES / "base" / "web-deployment.yaml").read_text())
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(deployment))
    assert validate([bad]).returncode != 0


def test_web_deployment_probes_resources_and_the_objects_that_select_it(built):
    resources = built["overlays/production"]
    web = resources[("Deployment", "alert-gateway-web")]
    pod = web["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert web["spec"]["replicas"] == 3
    assert container["command"][:2] == ["gateway", "serve"] and "0.0.0.0" in container["command"]
    assert container["image"].startswith("registry.example.com/alert-gateway")
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080}
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                                              "prometheus.io/path": "/metrics"}
    labels = pod["metadata"]["labels"]
    for kind, name in (("Service", "alert-gateway"), ("PodDisruptionBudget", "alert-gateway-web")):
        selector = resources[(kind, name)]["spec"]["selector"]
        assert selector.get("matchLabels", selector).items() <= labels.items(), kind
    hpa = resources[("HorizontalPodAutoscaler", "alert-gateway-web")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "alert-gateway-web" and hpa["minReplicas"] == 3
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    ingress = resources[("Ingress", "alert-gateway")]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ("Service", ingress["name"]) in resources
    assert all(doc["metadata"].get("namespace", "alert-gateway") == "alert-gateway" for doc in resources.values())
    commands = {name: doc["spec"]["template"]["spec"]["containers"][0]["command"]
                for (kind, name), doc in resources.items() if kind in ("Deployment", "Job")}
    assert commands["alert-gateway-worker"] == ["gateway", "worker"]
    assert commands["alert-gateway-migrate"] == ["gateway", "db", "upgrade"]


def test_configmap_gateway_yaml_passes_config_check(built, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(built["base"][("ConfigMap", "alert-gateway-config")]["data"]["gateway.yaml"])
    done = subprocess.run([GATEWAY, "config", "check", str(config)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"})
    assert done.returncode == 0, done.stderr


def test_compose_runs_migration_two_web_replicas_behind_one_port_and_a_worker():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    assert compose["migrate"]["command"] == ["gateway", "db", "upgrade"] and compose["migrate"]["restart"] == "no"
    assert compose["web"]["deploy"]["replicas"] == 2 and "ports" not in compose["web"]
    assert compose["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert compose["worker"]["command"] == ["gateway", "worker"]
    assert "--no-dispatcher" in compose["web"]["command"]
    assert [p.split(":")[-1] for p in compose["proxy"]["ports"]] == ["8080"]
    assert "server web:8080;" in (ROOT / "deploy" / "nginx.conf").read_text()
    for service in ("migrate", "web", "worker"):
        assert compose[service]["volumes"][0].endswith(":/etc/gateway/gateway.yaml:ro")
        assert compose[service]["env_file"].startswith("${GATEWAY_ENV_FILE")
