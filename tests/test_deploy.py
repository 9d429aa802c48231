"""The container image, compose file and Kubernetes container specs, run for real with Docker.

They install Debian's docker.io, docker-compose and debootstrap when missing, start a private dockerd and
build stand-ins for the base images (see testkit/docker.py), so they run in CI (.ci/run sets
GATEWAY_TEST_DOCKER=1) and where that is asked for: they take a few minutes and need root.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import create_engine, text
from testkit import docker
from testkit.shipping import ROOT, assert_versions, kustomized, post_webhook_and_read_back
from testkit.support import free_port, wait_until

RUN = os.environ.get("GATEWAY_TEST_DOCKER") == "1"
POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.skipif(not RUN, reason="image, compose and Kubernetes-spec tests run in CI: set "
                       "GATEWAY_TEST_DOCKER=1 (as .ci/run does) to install Docker and build the image"),
    pytest.mark.skipif(RUN and os.geteuid() != 0, reason="the Docker tests install packages and start "
                       "dockerd, which needs root"),
    pytest.mark.skipif(RUN and not POSTGRES_URL, reason="the image runs against the host's PostgreSQL: set "
                       "GATEWAY_TEST_POSTGRES_URL"),
]

IMAGE = "alert-gateway:latest"
"""What `make image` tags besides the version, and what compose and the manifests name."""
TOKEN = "deploy-admin-token"
NETWORK = "gateway-ci"
PROJECT = "gatewayci"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    docker.ensure_packages()
    daemon = docker.Daemon()
    daemon.start()
    try:
        docker.build_standins(daemon, tmp_path_factory.mktemp("standins"))
        daemon.run("network", "create", NETWORK)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def image(daemon):
    """`make image`, the README's command, against our daemon: wheels, then a build with no network."""
    done = subprocess.run(["make", "image", f"DOCKER={daemon.cli}"], cwd=ROOT, env=daemon.env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def host_database(daemon):
    """A fresh database on the host's PostgreSQL, reached from containers through a forwarder on the
    test network's gateway address (the server listens and trusts on 127.0.0.1 only)."""
    name = f"gw_deploy_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = urlsplit(POSTGRES_URL)
    forwarder = docker.Forwarder(docker.network_gateway(daemon, NETWORK), url.port or 5432)
    try:
        yield f"postgresql+psycopg://{url.username}@{forwarder.server.getsockname()[0]}:{forwarder.port}/{name}"
    finally:
        forwarder.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def healthy(base: str, path: str = "/health", timeout: float = 5) -> bool:
    try:
        return requests.get(base + path, timeout=timeout).status_code == 200
    except requests.RequestException:  # not listening yet
        return False


def published(daemon, container: str, port: int) -> str:
    return "http://" + daemon.out("port", container, str(port)).splitlines()[0]


def test_image_takes_a_webhook_on_postgres_as_a_non_root_user(daemon, image, host_database):
    config = json.loads(daemon.out("image", "inspect", image))[0]["Config"]
    assert config["User"] == "gateway"
    assert config["Cmd"] == ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert "GATEWAY_CONFIG=/etc/gateway/gateway.yaml" in config["Env"] and "8080/tcp" in config["ExposedPorts"]
    assert_versions(daemon.out("run", "--rm", image, "gateway", "--version"))
    env = ["--env", f"GATEWAY_DATABASE_URL={host_database}", "--env", f"GATEWAY_ADMIN_TOKEN={TOKEN}"]
    assert "database at head" in daemon.out("run", "--rm", "--network", NETWORK, *env, image,
                                            "gateway", "db", "upgrade")
    daemon.run("run", "--detach", "--name", "gateway-ci-image", "--network", NETWORK, "--publish", "127.0.0.1::8080",
               "--health-interval", "1s", *env, image)
    # The image's own HEALTHCHECK (only its interval shortened) must call the container healthy.
    wait_until(lambda: daemon.out("inspect", "--format", "{{.State.Health.Status}}", "gateway-ci-image")
               == "healthy", timeout=90, interval=1)
    assert daemon.out("exec", "gateway-ci-image", "id", "-u") == "10001"
    post_webhook_and_read_back(published(daemon, "gateway-ci-image", 8080), TOKEN)
    daemon.run("rm", "--force", "gateway-ci-image")


def test_kubernetes_container_specs_run_and_answer_their_probes(daemon, image, host_database, tmp_path):
    resources = {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomized("base")}
    secrets = {"alert-gateway": {"database-url": host_database, "admin-token": TOKEN}}
    configmaps = {name: doc["data"] for (kind, name), doc in resources.items() if kind == "ConfigMap"}

    def run(kind: str, name: str, *options: str) -> tuple[dict, str]:
        pod = resources[(kind, name)]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        args = docker.pod_run_args(pod, container, secrets, configmaps, tmp_path)
        return container, daemon.out("run", "--network", NETWORK, *options, *args)

    _, migrated = run("Job", "alert-gateway-migrate", "--rm")
    assert "database at head" in migrated
    web, _ = run("Deployment", "alert-gateway-web", "--detach", "--name", "gateway-ci-k8s-web",
                 "--publish", "127.0.0.1::8080")
    run("Deployment", "alert-gateway-worker", "--detach", "--name", "gateway-ci-k8s-worker")
    ports = {port["name"]: port["containerPort"] for port in web["ports"]}
    for probe in (web["readinessProbe"], web["livenessProbe"]):
        port = probe["httpGet"]["port"]
        base = published(daemon, "gateway-ci-k8s-web", ports.get(port, port))
        budget = probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"] + 60

        wait_until(lambda: healthy(base, probe["httpGet"]["path"], probe["timeoutSeconds"]), timeout=budget,
                   interval=1)
    post_webhook_and_read_back(base, TOKEN)  # the ConfigMap's gateway.yaml, read-only root and all
    wait_until(lambda: "worker delivering" in daemon.run("logs", "gateway-ci-k8s-worker").stdout.decode(),
               timeout=60, interval=1)
    assert daemon.out("inspect", "--format", "{{.State.Running}}", "gateway-ci-k8s-worker") == "true"
    daemon.run("rm", "--force", "gateway-ci-k8s-web", "gateway-ci-k8s-worker")


COMPOSE_CONFIG = """
sources: [{key: whatap-prod, type: whatap}]
sinks:
  - {name: itms, type: itms}
  - {name: spaceone, type: spaceone, url: "${SPACEONE_WEBHOOK_URL}"}  # an outbox sink: the worker delivers it
route: {sinks: [itms, spaceone]}
"""


class SpaceONE:
    """A SpaceONE webhook endpoint on the compose network's host address: it records the events the
    worker delivers and answers 200 as SpaceONE does."""

    PATH = "/monitoring/v1/webhook/webhook-ci/access-key-ci/events"

    def __init__(self, host: str):
        self.events: list[dict] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                events.append({"path": self.path, "json": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}{self.PATH}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_compose_web_replicas_and_worker_share_its_postgres(daemon, image, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(COMPOSE_CONFIG)
    env_file = tmp_path / "gateway.env"
    port = free_port()
    env = {**daemon.env, "GATEWAY_IMAGE": image, "GATEWAY_PORT": str(port), "GATEWAY_ENV_FILE": str(env_file),
           "GATEWAY_CONFIG_FILE": str(config)}

    def compose(*args: str, timeout: float = 300, check: bool = True) -> str:
        done = subprocess.run(["docker-compose", "--project-name", PROJECT, "--file",
                               str(ROOT / "deploy" / "compose.yaml"), "--env-file", str(env_file), *args],
                              env=env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            logs = compose("logs", "--no-color", "--tail", "40", check=False)
            raise AssertionError(f"{done.stdout[-3000:]}{done.stderr[-3000:]}\n{logs[-6000:]}")
        return done.stdout.strip()

    password = f"ci-{uuid.uuid4().hex}"

    def write_env(spaceone_url: str) -> None:
        env_file.write_text(f"POSTGRES_PASSWORD={password}\nGATEWAY_ADMIN_TOKEN={TOKEN}\n"
                            f"SPACEONE_WEBHOOK_URL={spaceone_url}\n")

    write_env("http://not-yet.invalid" + SpaceONE.PATH)
    spaceone = None
    try:
        compose("up", "--detach", "postgres")  # creates the network the SpaceONE stand-in listens on
        spaceone = SpaceONE(docker.network_gateway(daemon, f"{PROJECT}_default"))
        write_env(spaceone.url)
        compose("up", "--detach", timeout=600)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(base), timeout=120, interval=1)
        migrate = compose("ps", "-q", "migrate")
        assert daemon.out("inspect", "--format", "{{.State.ExitCode}}", migrate) == "0"
        webs = compose("ps", "-q", "web").split()
        assert len(webs) == 2 and len(compose("ps", "-q", "worker").split()) == 1

        incident = post_webhook_and_read_back(base, TOKEN)  # through the one port
        for web in webs:  # each replica, asked directly, sees what went through the proxy
            address = daemon.out("inspect", "--format",
                                 f'{{{{(index .NetworkSettings.Networks "{PROJECT}_default").IPAddress}}}}', web)
            found = requests.get(f"http://{address}:8080/api/incidents/{incident['id']}", timeout=10,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
            assert found.status_code == 200 and found.json()["title"] == incident["title"]
        # The web replicas run without a dispatcher: the worker delivered this, from the same database.
        wait_until(lambda: spaceone.events, timeout=60, interval=0.5)
        assert spaceone.events[0]["path"] == SpaceONE.PATH
        deliveries = requests.get(f"{base}/api/deliveries", params={"sink": "spaceone"}, timeout=10,
                                  headers={"Authorization": f"Bearer {TOKEN}"}).json()["items"]
        # The event posted, recorded as delivered (the sink may also have queued a later refresh).
        assert min(deliveries, key=lambda d: d["id"])["status"] == "delivered", deliveries
    finally:
        compose("down", "--volumes", "--remove-orphans")
        if spaceone:
            spaceone.stop()
