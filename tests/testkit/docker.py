"""Docker for the deployment tests: Debian's docker.io with a private dockerd, the stand-ins for the images
no registry can give us here, and running a Kubernetes container spec with ``docker run``.

The stand-ins are Debian bookworm made with debootstrap (its python3 is 3.11, its PostgreSQL 15 and its
nginx 1.22), dressed as python:3.11-slim, postgres:15-bookworm and nginx:1.22-bookworm: the same paths,
variables, entrypoint behaviour and commands that the Dockerfile and compose.yaml rely on.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

APT_PACKAGES = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}
"""Command -> the Debian package that provides it."""

STANDIN_ROOT = "gateway-standin/bookworm:ci"
STANDINS = {"python:3.11-slim": "python", "postgres:15-bookworm": "postgres", "nginx:1.22-bookworm": "nginx"}
"""Image the project names -> the stand-in recipe below."""
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RECIPES = {
    "python": f"""
        ENV PATH={BASE_PATH} LANG=C.UTF-8
        CMD ["python3"]
    """,
    "postgres": f"""
        ENV PATH=/usr/lib/postgresql/15/bin:{BASE_PATH} LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data
        COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
        VOLUME /var/lib/postgresql/data
        ENTRYPOINT ["docker-entrypoint.sh"]
        EXPOSE 5432
        STOPSIGNAL SIGINT
        CMD ["postgres"]
    """,
    "nginx": f"""
        ENV PATH={BASE_PATH} LANG=C.UTF-8
        EXPOSE 80
        STOPSIGNAL SIGQUIT
        CMD ["nginx", "-g", "daemon off;"]
    """,
}
POSTGRES_ENTRYPOINT = r"""#!/bin/bash
# The official image's first start: POSTGRES_USER (superuser), POSTGRES_PASSWORD and POSTGRES_DB, password
# logins from any address, then postgres as the postgres user listening on all addresses.
set -euo pipefail
if [ "$1" != postgres ]; then exec "$@"; fi
user="${POSTGRES_USER:-postgres}"
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"; printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"; chown postgres "$pwfile"
  runuser -u postgres -- initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  runuser -u postgres -- pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres \
    -c "CREATE DATABASE \"${POSTGRES_DB:-$user}\""
  runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop
fi
shift
exec runuser -u postgres -- postgres -D "$PGDATA" -c listen_addresses='*' "$@"
"""


def ensure_packages() -> None:
    """Install from Debian whatever of docker.io, docker-compose and debootstrap is missing."""
    missing = sorted({pkg for command, pkg in APT_PACKAGES.items() if not shutil.which(command)})
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env=env, capture_output=True, timeout=900)


def debian_mirror() -> str:
    """The Debian mirror apt is configured with (deb822 or one-line sources), for debootstrap."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or not path.name.endswith((".list", ".sources")):
            continue
        text = path.read_text()
        for uri, suites in re.findall(r"^URIs:\s*(\S+)\s*\nSuites:\s*(.+)$", text, re.M):
            if "bookworm" in suites.split():
                return uri
        for uri in re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            return uri
    return "http://deb.debian.org/debian"


class Daemon:
    """A dockerd of our own: its own socket, data and exec roots, no default bridge (so it cannot clash
    with a system dockerd); stop() removes every container and network and ends the daemon."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="gw-docker-"))
        self.socket = self.root / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        self.cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
        self.log = self.root / "dockerd.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--host", f"unix://{self.socket}", "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid"),
                 "--bridge", "none"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while self.run("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dockerd did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def run(self, *args: str, check: bool = True, timeout: float = 600, input: bytes | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([self.cli, *args], env={**self.env, **(env or {})}, capture_output=True,
                              timeout=timeout, input=input)
        if check and done.returncode:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout.decode(errors='replace')[-3000:]}\n"
                                 f"{done.stderr.decode(errors='replace')[-3000:]}")
        return done

    def out(self, *args: str, **kwargs) -> str:
        return self.run(*args, **kwargs).stdout.decode().strip()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            containers = self.out("ps", "-aq", check=False).split()
            if containers:
                self.run("rm", "-f", "-v", *containers, check=False)
            self.run("network", "prune", "-f", check=False)
            self.run("volume", "prune", "-f", check=False)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


def build_standins(daemon: Daemon, workdir: Path) -> None:
    """debootstrap bookworm once, import it, and tag one stand-in per image the project names."""
    rootfs = workdir / "rootfs"
    try:
        _debootstrap(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--exclude=./proc/*", "--exclude=./sys/*", "-c", "."],
                               stdout=subprocess.PIPE)
        try:
            subprocess.run([daemon.cli, "import", "-", STANDIN_ROOT], stdin=tar.stdout, env=daemon.env,
                           check=True, capture_output=True, timeout=600)
        finally:
            tar.stdout.close()
            tar.wait()
    finally:
        remove_rootfs(rootfs)
    for tag, recipe in STANDINS.items():
        context = workdir / f"standin-{recipe}"
        context.mkdir()
        script = context / "postgres-entrypoint.sh"
        script.write_text(POSTGRES_ENTRYPOINT)
        script.chmod(0o755)
        (context / "Dockerfile").write_text(f"FROM {STANDIN_ROOT}\n" + "\n".join(
            line.strip() for line in RECIPES[recipe].strip().splitlines()) + "\n")
        daemon.run("build", "--network", "none", "--tag", tag, str(context))


def _debootstrap(rootfs: Path) -> None:
    """Debian bookworm with python3, PostgreSQL 15 and nginx, laid out as the images we stand in for.
    debootstrap keeps the packages from starting their services (PostgreSQL, nginx) in the chroot."""
    subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,postgresql-15,nginx-light",
                    "bookworm", str(rootfs), debian_mirror()], check=True, capture_output=True, timeout=1200)
    for name in ("python", "python3"):  # where python:3.11-slim has its interpreter
        (rootfs / "usr/local/bin" / name).symlink_to("/usr/bin/python3")
    (rootfs / "etc/nginx/sites-enabled/default").unlink()
    for log, target in (("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")):  # as nginx's image
        (rootfs / "var/log/nginx" / log).unlink(missing_ok=True)
        (rootfs / "var/log/nginx" / log).symlink_to(target)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)


def remove_rootfs(rootfs: Path) -> None:
    """Delete a debootstrap tree, first unmounting what a failed run may have left mounted in it (its
    /proc, /sys), so that nothing outside the tree is touched."""
    def mounted() -> list[str]:
        return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                if line.split()[1].startswith(f"{rootfs}/")]

    for mount in sorted(mounted(), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)
    if not mounted():
        shutil.rmtree(rootfs, ignore_errors=True)


def network_gateway(daemon: Daemon, network: str) -> str:
    """The host's address on a Docker network: where containers reach a server the test runs."""
    return daemon.out("network", "inspect", network, "--format", "{{(index .IPAM.Config 0).Gateway}}")


class Forwarder:
    """Relays TCP from ``listen_host`` (an address containers reach) to a server on 127.0.0.1, so a
    container talks to the host's PostgreSQL, which listens (and trusts) only on 127.0.0.1."""

    def __init__(self, listen_host: str, target_port: int):
        self.target_port = target_port
        self.server = socket.create_server((listen_host, 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed by stop()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.server.close()
        for sock in self.sockets:
            sock.close()


def pod_run_args(pod: dict, container: dict, secrets: dict[str, dict[str, str]],
                 configmaps: dict[str, dict[str, str]], workdir: Path) -> list[str]:
    """``docker run`` options for one container of a pod spec: its command, env (secretKeyRef and
    optional secretRef resolved from ``secrets``), user, read-only root, dropped capabilities, limits,
    ConfigMap volumes as read-only bind mounts and emptyDirs as tmpfs."""
    args: list[str] = []
    pod_security = pod.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    if "runAsUser" in security:
        args += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for capability in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args += ["--memory", limits["memory"].replace("Mi", "m").replace("Gi", "g")]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        args += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    for source in container.get("envFrom", []):
        ref = source["secretRef"]
        if ref["name"] not in secrets:
            assert ref.get("optional"), f"secret {ref['name']} is not optional"
            continue
        for key, value in secrets[ref["name"]].items():
            args += ["--env", f"{key}={value}"]
    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]]
        args += ["--env", f"{var['name']}={value}"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            args += ["--tmpfs", f"{mount['mountPath']}:mode=1777"]
        else:
            directory = workdir / f"configmap-{volume['configMap']['name']}"
            directory.mkdir(exist_ok=True)
            for name, text in configmaps[volume["configMap"]["name"]].items():
                (directory / name).write_text(text)
            args += ["--volume", f"{directory}:{mount['mountPath']}:ro"]
    return [*args, "--entrypoint", container["command"][0], container["image"], *container["command"][1:]]
