#!/usr/bin/env python3
"""``make bench``: the gateway against a bare-Flask floor, on SQLite and PostgreSQL, under wrk.

For each database: a fresh database, ``gateway db upgrade``, ``gateway serve --workers N``
with a one-source bench config, a warm-up, then wrk (bench/whatap.lua) at BENCH_CONNECTIONS (32);
then the same for bench/floor_app.py served by gunicorn the same way.  Prints accepted
webhooks/s, p50/p95/p99, every non-2xx, worker RSS (start/middle/end) and the ratio
gateway/floor.  With BENCH_SOAK=1 it instead sends BENCH_SOAK_REQUESTS (default 100,000)
webhooks to the gateway and prints worker RSS every BENCH_SOAK_CHUNK (20,000) requests.
Without it, a short soak (20,000 on SQLite) runs after the comparison.

Only 127.0.0.1 is contacted.  Every server is stopped and every temporary database
dropped at the end, also on failure or Ctrl-C.  See bench/README.md.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from targets import record  # noqa: E402  (bench/targets.py: this directory is on the path, run or imported)
BIN = Path(sys.executable).parent
LUA = ROOT / "bench" / "whatap.lua"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


DURATION = env_int("BENCH_DURATION", 20)
WARMUP = env_int("BENCH_WARMUP", 3)
WORKERS = env_int("BENCH_WORKERS", 2)


def env_threads() -> int | None:
    """BENCH_THREADS, else GATEWAY_THREADS, checked now rather than when the first server starts."""
    name = "BENCH_THREADS" if os.environ.get("BENCH_THREADS") else "GATEWAY_THREADS"
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        threads = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of threads") from None
    if threads < 0:
        raise ValueError(f"{name}={raw!r}: threads cannot be negative")
    return threads or None


THREADS = env_threads()
"""Threads per worker, gateway and floor alike; None (unset or 0): the gateway's default per database."""
CONNECTIONS = env_int("BENCH_CONNECTIONS", 32)
WRK_THREADS = env_int("BENCH_WRK_THREADS", 2)
RUNS = env_int("BENCH_RUNS", 1)
FINGERPRINTS = env_int("BENCH_FINGERPRINTS", 1000)
RECOVERY_PCT = env_int("BENCH_RECOVERY_PCT", 5)
TARGETS = [t.strip() for t in (os.environ.get("BENCH_TARGETS") or "gateway,floor,http").split(",") if t.strip()]
DBS = [d.strip() for d in (os.environ.get("BENCH_DBS") or "sqlite,sqlite-normal,postgresql").split(",") if d.strip()]
"""Database kinds: sqlite (synchronous=FULL, the default), sqlite-normal (GATEWAY_SQLITE_SYNCHRONOUS=NORMAL), postgresql."""
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_PREFIX = os.environ.get("BENCH_DB_PREFIX") or "gateway_bench"
"""Names of the temporary PostgreSQL databases: PREFIX_NAME_PID (a shared server: give yours a prefix of its own)."""
SOAK_ONLY = (os.environ.get("BENCH_SOAK") or "0") not in ("", "0", "no", "false")
SOAK_REQUESTS = env_int("BENCH_SOAK_REQUESTS", 100_000 if SOAK_ONLY else 20_000)
SOAK_CHUNK = env_int("BENCH_SOAK_CHUNK", 20_000)
SOAK_DBS = [d.strip() for d in (os.environ.get("BENCH_SOAK_DBS") or "sqlite").split(",") if d.strip()]
SOAK_MAX_SECONDS = env_int("BENCH_SOAK_MAX_SECONDS", 1200)
SOAK_DRAIN_MAX_SECONDS = env_int("BENCH_SOAK_DRAIN_MAX_SECONDS", 1800)
"""After the last chunk, how long the dispatcher may take to deliver what is still due: its memory is then
measured over every delivery the soak's webhooks queued, not only over those it kept up with."""
SOAK_DRAIN_SAMPLE_SECONDS = 30
SOAK_FLAT_MIB = 10
"""Flat: no process grew by more than this after the soak's first chunk (warm-up)."""
OUT = os.environ.get("BENCH_OUT")
SLOW_CLIENTS = env_int("BENCH_SLOW_CLIENTS", 200)
SLOW_DRIP_SECONDS = env_int("BENCH_SLOW_DRIP_SECONDS", 2)
SLOW_DURATION = env_int("BENCH_SLOW_DURATION", 10)
SLOW_CONNECTIONS = env_int("BENCH_SLOW_CONNECTIONS", 8)
"""wrk's connections beside the slow ones: a load the server keeps up with, so p99 shows what the
slow clients cost rather than queueing at saturation (that is the 32-connection runs' subject)."""
SLOW_DBS = [d.strip() for d in (os.environ.get("BENCH_SLOW_DBS") or "sqlite,postgresql").split(",") if d.strip()]
TARGET_SLOW_P99_MS = 100

TARGET_RATE = 1500
TARGET_FLOOR_FRACTION = 0.75
TARGET_P99_MS = 50
FLOOR_TARGETS = {"postgresql": 0.90, "sqlite": 0.95, "sqlite-normal": 0.95}
"""Issue 16's "ingest against the floor": the gateway's accepted/s as a share of the floor's, per database."""
FLOOR_P99_RATIO = 1.25
"""Issue 16: the gateway's p99 at most this many times the floor's."""

BENCH_CONFIG = """\
# Written by bench/bench.py: one WhaTap source without a token, everything to the incident store.
sources:
  - key: bench
    type: whatap
    name: bench
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""


def sqlite_synchronous(db: str) -> dict:
    """The environment that picks SQLite's synchronous level for a database kind (gateway and floor alike)."""
    return {"GATEWAY_SQLITE_SYNCHRONOUS": "NORMAL" if db == "sqlite-normal" else "FULL"}


def threads_for(db: str, target: str = "gateway") -> int:
    """``db`` is a database kind or URL.  The floor, which has no group commit, gets the threads the
    gateway defaults to without one (1 on SQLite: its writers wait in SQLite's busy handler)."""
    if THREADS:
        return THREADS
    from gateway.settings import Settings
    from gateway.web.gunicorn_conf import default_threads

    return default_threads(db, False if target == "floor" else Settings.from_environ().group_commit)


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- processes

class Server:
    """A gunicorn master we started, in its own session so its whole group can be stopped."""

    live: list["Server"] = []
    started: list["Server"] = []

    def __init__(self, name: str, argv: list[str], env: dict, logfile: Path):
        self.name, self.logfile = name, logfile
        self._log = open(logfile, "wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        Server.live.append(self)
        Server.started.append(self)

    def workers(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            return sorted(int(p) for p in text.split())
        except OSError:
            pids = []
            for d in Path("/proc").iterdir():
                if d.name.isdigit():
                    try:
                        if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            pids.append(int(d.name))
                    except (OSError, IndexError, ValueError):
                        pass
            return sorted(pids)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self in Server.live:
            Server.live.remove(self)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._log.close()

    @classmethod
    def stop_all(cls) -> None:
        for server in list(cls.live):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                log(f"  could not stop {server.name}: {exc}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(server: Server, url: str, timeout: float = 60) -> None:
    """Until ``url`` answers (any HTTP status) and every worker has booted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                pass
            answered = True
        except urllib.error.HTTPError:
            answered = True
        except (urllib.error.URLError, OSError):
            answered = False
        if answered and len(server.workers()) >= WORKERS:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout}s:\n{server.tail()}")


def rss_kib(pids: list[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[pid] = int(line.split()[1])
        except OSError:
            pass
    return out


HZ = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, reaped_children: bool = False) -> float:
    """CPU seconds (user + system) a process has used so far, with ``reaped_children`` those of its
    children that have ended and been waited for; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15 if reaped_children else 13]) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def postgres_cpu() -> float:
    """CPU seconds PostgreSQL's processes have used so far, with those of backends that have ended:
    the postmaster's reaped children.  Live processes alone made a delta negative when connections
    closed in between (a pool's, a ``gateway worker``'s)."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if stat[stat.index("(") + 1:stat.rindex(")")] == "postgres":
                total += proc_cpu(int(d.name), reaped_children=True)
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / HZ, sum(fields[:8]) / HZ


class CpuMeter:
    """Who used the CPU during one measured run: the server, wrk, PostgreSQL, everyone else.

    "others" is the machine's busy time minus those three: other people's test runs on a
    shared machine show up there, and a large value means the figures are pessimistic.
    """

    def __init__(self, server: "Server", pids: list[int], postgres: bool):
        self.pids = [server.proc.pid, *pids]
        self.postgres = postgres
        self.start = self._read()

    def _read(self):
        """(server CPU, PostgreSQL CPU, wrk's rusage, machine CPU, CPU per worker): each process read once."""
        master, *workers = (proc_cpu(p) for p in self.pids)
        return (master + sum(workers), postgres_cpu() if self.postgres else 0.0,
                resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu(), workers)

    def stop(self, requests: int, seconds: float) -> dict:
        end = self._read()
        server = end[0] - self.start[0]
        postgres = end[1] - self.start[1]
        wrk = (end[2].ru_utime + end[2].ru_stime) - (self.start[2].ru_utime + self.start[2].ru_stime)
        busy = end[3][0] - self.start[3][0]
        ncpu = os.cpu_count() or 1
        others = max(busy - server - postgres - wrk, 0.0)
        return {
            "server_ms_per_request": 1000 * server / requests if requests else 0.0,
            "postgres_ms_per_request": 1000 * postgres / requests if requests else 0.0,
            "server_cores": server / seconds, "wrk_cores": wrk / seconds, "postgres_cores": postgres / seconds,
            "others_cores": others / seconds, "machine_busy": busy / seconds / ncpu,
            # Cores per worker: a worker near 0 while another is busy means connections were not shared.
            "worker_cores": [(b - a) / seconds for a, b in zip(self.start[4], end[4])],
        }


# --------------------------------------------------------------------------- wrk

def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    log("wrk is not installed: installing Debian's package (apt-get install -y wrk)")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    apt_env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(sudo + ["apt-get", "install", "-y", "wrk"], env=apt_env, timeout=600).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update"], env=apt_env, timeout=600, check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "wrk"], env=apt_env, timeout=600, check=True)
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError("wrk is still missing after apt-get install")
    return path


def run_wrk(wrk: str, url: str, seconds: int, sampler=None, meter_factory=None, connections: int = CONNECTIONS) -> dict:
    """One wrk run; ``sampler(phase)`` is called at its start, middle and end."""
    nonce = secrets.token_hex(4)
    argv = [wrk, f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
            "-s", str(LUA), url, "--", nonce, str(FINGERPRINTS), str(RECOVERY_PCT)]
    samples = {}
    if sampler:
        samples["start"] = sampler()
    meter = meter_factory() if meter_factory else None
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = None
    if sampler:
        timer = threading.Timer(seconds / 2, lambda: samples.__setitem__("middle", sampler()))
        timer.start()
    try:
        output, _ = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError("wrk did not finish in time")
    finally:
        if timer:
            timer.cancel()
    if sampler:
        samples["end"] = sampler()
    line = next((l for l in output.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no BENCH_JSON line (exit {proc.returncode}):\n{output}")
    result = json.loads(line.removeprefix("BENCH_JSON "))
    secs = result["duration_us"] / 1e6
    statuses = {int(k): v for k, v in result["statuses"].items()}
    result.update(
        seconds=secs,
        statuses=statuses,
        accepted=statuses.get(202, 0),
        accepted_per_s=statuses.get(202, 0) / secs if secs else 0.0,
        non_2xx={k: v for k, v in statuses.items() if not 200 <= k < 300},
        socket_errors={k: v for k, v in result["errors"].items() if v and k != "status"},
        p50_ms=result["latency_us"]["p50"] / 1000, p95_ms=result["latency_us"]["p95"] / 1000,
        p99_ms=result["latency_us"]["p99"] / 1000, rss=samples,
        cpu=meter.stop(result["requests"], secs) if meter else None,
    )
    return result


# --------------------------------------------------------------------------- databases

def sqlalchemy_to_libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class Databases:
    """Fresh databases for one bench run: SQLite files in a temp dir, PostgreSQL databases dropped at the end."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.pg_created: list[str] = []

    def fresh(self, kind: str, name: str) -> str:
        if kind.startswith("sqlite"):
            path = self.workdir / f"{name}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            return f"sqlite:///{path}"
        if kind == "postgresql":
            import psycopg

            dbname = f"{PG_PREFIX}_{name}_{os.getpid()}"
            with psycopg.connect(sqlalchemy_to_libpq(PG_ADMIN_URL), autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{dbname}"')
            self.pg_created.append(dbname)
            base = PG_ADMIN_URL.rsplit("/", 1)[0]
            return f"{base}/{dbname}"
        raise ValueError(f"unknown database kind {kind!r} (sqlite, postgresql)")

    def server_version(self) -> str:
        try:
            import psycopg

            with psycopg.connect(sqlalchemy_to_libpq(PG_ADMIN_URL), connect_timeout=5) as conn:
                return conn.execute("SHOW server_version").fetchone()[0]
        except Exception as exc:
            return f"unavailable ({exc.__class__.__name__})"

    def drop_all(self) -> None:
        if not self.pg_created:
            return
        import psycopg

        with psycopg.connect(sqlalchemy_to_libpq(PG_ADMIN_URL), autocommit=True, connect_timeout=10) as conn:
            for dbname in self.pg_created:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                except Exception as exc:
                    log(f"  could not drop {dbname}: {exc}")
        self.pg_created.clear()


# --------------------------------------------------------------------------- targets

def gateway_env(workdir: Path, db_url: str, db: str, config_text: str = BENCH_CONFIG) -> dict:
    """The environment of a bench gateway on a fresh database (migrated here) with ``config_text``."""
    config = workdir / "bench-gateway.yaml"
    config.write_text(config_text)
    env = dict(os.environ, **sqlite_synchronous(db), GATEWAY_DATABASE_URL=db_url, GATEWAY_CONFIG=str(config),
               GATEWAY_ADMIN_TOKEN=secrets.token_urlsafe(16), GATEWAY_THREADS=str(threads_for(db_url)))
    subprocess.run([str(BIN / "gateway"), "db", "upgrade"], env=env, cwd=ROOT, check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    return env


def start_gateway(workdir: Path, db_url: str, tag: str, db: str, config_text: str = BENCH_CONFIG,
                  serve_args: tuple[str, ...] = ()) -> tuple[Server, str]:
    env = gateway_env(workdir, db_url, db, config_text)
    port = free_port()
    server = Server(f"gateway ({tag})",
                    [str(BIN / "gateway"), "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--workers", str(WORKERS), *serve_args], env, workdir / f"gateway-{tag}.log")
    base = f"http://127.0.0.1:{port}"
    wait_ready(server, f"{base}/health")
    return server, f"{base}/hooks/whatap/bench/"


def start_floor(workdir: Path, db_url: str, tag: str, db: str) -> tuple[Server, str]:
    from bench.floor_app import create_schema

    create_schema(db_url)
    return serve_floor(workdir, tag, dict(sqlite_synchronous(db), BENCH_FLOOR_DATABASE_URL=db_url),
                       threads_for(db_url, "floor"))


def start_http_floor(workdir: Path, db_url: str, tag: str, db: str) -> tuple[Server, str]:
    """The floor without a database (``db_url`` is only the kind, ``db``), with the gateway's threads on
    it: what serving alone costs."""
    return serve_floor(workdir, tag, {"BENCH_FLOOR_DATABASE_URL": ""}, threads_for(db))


def serve_floor(workdir: Path, tag: str, env: dict, threads: int) -> tuple[Server, str]:
    port = free_port()
    env = dict(os.environ, **env)
    server = Server(f"floor ({tag})",
                    [sys.executable, "-m", "gunicorn", "--config", "python:bench.floor_gunicorn",
                     "--threads", str(threads),
                     "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "20",
                     "bench.floor_app:create_app()"], env, workdir / f"floor-{tag}.log")
    base = f"http://127.0.0.1:{port}"
    wait_ready(server, f"{base}/")
    return server, f"{base}/hooks/whatap/bench/"


def measure(wrk: str, server: Server, url: str, url_db: str) -> dict:
    run_wrk(wrk, url, WARMUP)  # warm-up: connections, pools, caches, the first incidents
    pids = server.workers()
    load = os.getloadavg()[0]
    result = run_wrk(wrk, url, DURATION, sampler=lambda: rss_kib(pids),
                     meter_factory=lambda: CpuMeter(server, pids, "postgresql" in url_db))
    result["loadavg_before"] = load
    result["worker_pids"] = pids
    if server.workers() != pids:
        result["note"] = f"worker pids changed during the run: {pids} -> {server.workers()}"
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} died during the run:\n{server.tail()}")
    return result


def fmt_rss(samples: dict) -> str:
    def total(phase):
        return sum(samples.get(phase, {}).values()) / 1024
    per = lambda phase: "+".join(f"{v / 1024:.0f}" for v in samples.get(phase, {}).values())
    return f"{per('start')} / {per('middle')} / {per('end')} MiB (sum {total('start'):.0f}->{total('end'):.0f})"


def describe(label: str, r: dict) -> None:
    log(f"  {label}: {r['accepted']} accepted in {r['seconds']:.1f}s = {r['accepted_per_s']:.0f}/s; "
        f"{r['requests']} responses; p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
        f"max {r['latency_us']['max'] / 1000:.0f} ms")
    log(f"    statuses {dict(sorted(r['statuses'].items()))}"
        + (f"; NON-2xx {r['non_2xx']}" if r["non_2xx"] else "; no non-2xx")
        + (f"; socket errors {r['socket_errors']}" if r["socket_errors"] else ""))
    log(f"    worker RSS start/middle/end: {fmt_rss(r['rss'])}")
    c = r.get("cpu")
    if c:
        log(f"    CPU: server {c['server_ms_per_request']:.2f} ms/request ({c['server_cores']:.2f} cores), "
            f"wrk {c['wrk_cores']:.2f} cores, postgres {c['postgres_cores']:.2f} cores, "
            f"OTHER processes {c['others_cores']:.2f} cores; machine {c['machine_busy']:.0%} busy; "
            f"load average before {r['loadavg_before']:.1f}")
        log(f"    cores per worker: {' + '.join(f'{w:.2f}' for w in c.get('worker_cores', []))}")
        if c["others_cores"] > 0.2:
            log(f"    WARNING: other processes used {c['others_cores']:.2f} cores during this run: "
                f"the figures are pessimistic; rerun on a quiet machine")
    if r.get("note"):
        log(f"    NOTE: {r['note']}")


def compare(wrk: str, workdir: Path, dbs: Databases) -> dict:
    results: dict = {db: {"gateway": [], "floor": [], "http": []} for db in DBS}
    for run in range(1, RUNS + 1):
        for db in DBS:
            for target, start in (("gateway", start_gateway), ("floor", start_floor), ("http", start_http_floor)):
                if target not in TARGETS:
                    continue
                tag = f"{db}-{target}-{run}"
                log(f"[run {run}/{RUNS}] {target} on {db}: fresh database, serve --workers {WORKERS} "
                    f"(front x {threads_for(db, target)} threads), warm-up {WARMUP}s, wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{DURATION}s")
                url_db = db if target == "http" else dbs.fresh(db, f"{target}_{run}")  # http stores nothing
                server, url = start(workdir, url_db, tag, db)
                try:
                    r = measure(wrk, server, url, url_db)
                finally:
                    server.stop()
                describe(target, r)
                results[db][target].append(r)
    return results


class Drippers:
    """``count`` connections that each send one more byte of a webhook's headers every
    ``interval`` seconds and never finish it: the slow senders of issue 11."""

    def __init__(self, url: str, count: int, interval: float):
        host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
        self.socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(count)]
        for sock in self.socks:
            sock.sendall(b"POST /hooks/whatap/bench/ HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._drip, args=(interval,), daemon=True)
        self.thread.start()

    def _drip(self, interval: float) -> None:
        while not self.stopped.wait(interval):
            for sock in self.socks:
                try:
                    sock.send(b"x")
                except OSError:
                    pass  # answered and closed (its read deadline passed)

    def unanswered(self) -> int:
        import select

        return len(self.socks) - len(select.select(self.socks, [], [], 0)[0])

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        for sock in self.socks:
            sock.close()


def slow_clients(wrk: str, workdir: Path, dbs: Databases, db: str) -> dict:
    """wrk's webhooks without, then with SLOW_CLIENTS connections dripping theirs: the p99
    target with them is 100 ms."""
    log(f"[slow clients] gateway on {db}: wrk -c{SLOW_CONNECTIONS} -d{SLOW_DURATION}s alone, then while "
        f"{SLOW_CLIENTS} connections drip a byte every {SLOW_DRIP_SECONDS}s")
    server, url = start_gateway(workdir, dbs.fresh(db, "slow"), f"{db}-slow", db)
    try:
        run_wrk(wrk, url, WARMUP, connections=SLOW_CONNECTIONS)
        alone = run_wrk(wrk, url, SLOW_DURATION, connections=SLOW_CONNECTIONS)
        drippers = Drippers(url, SLOW_CLIENTS, SLOW_DRIP_SECONDS)
        try:
            result = run_wrk(wrk, url, SLOW_DURATION, connections=SLOW_CONNECTIONS)
            result["slow_unanswered"] = drippers.unanswered()
        finally:
            drippers.close()
    finally:
        server.stop()
    describe("without slow clients", alone)
    describe(f"with {SLOW_CLIENTS} slow clients", result)
    log(f"    slow connections still open, unanswered, at the end: {result['slow_unanswered']} of {SLOW_CLIENTS}")
    return dict(result, db=db, alone_p99_ms=alone["p99_ms"], alone_accepted_per_s=alone["accepted_per_s"])


def rss_line(rss: dict, dispatcher_pid: int) -> str:
    return ", ".join(f"{'dispatcher' if p == dispatcher_pid else 'worker'} {p} {v / 1024:.1f} MiB" for p, v in rss.items())


def drain_soak(url_db: str, receiver: "Receiver", dispatcher: Server, pids: list[int], sent: int, points: list) -> int:
    """Once the soak's webhooks are in, let the dispatcher deliver every row still due (a tracking sink's
    refreshes fall due later, on purpose), sampling RSS meanwhile; the rows still due when
    SOAK_DRAIN_MAX_SECONDS ran out (0: all delivered)."""
    from sqlalchemy import create_engine, func, select

    from gateway.store.models import DeliveryRow, utcnow

    engine = create_engine(url_db)
    due_now = select(func.count()).where(DeliveryRow.status == "pending")

    def due() -> int:
        with engine.connect() as conn:
            return conn.execute(due_now.where(DeliveryRow.next_attempt_at <= utcnow())).scalar_one()

    try:
        left, started = due(), time.monotonic()
        while left and time.monotonic() - started < SOAK_DRAIN_MAX_SECONDS:
            time.sleep(SOAK_DRAIN_SAMPLE_SECONDS)
            left = due()
            points.append((sent, receiver.received, rss_kib(pids)))
            if dispatcher.proc.poll() is not None:
                raise RuntimeError(f"the dispatcher exited with {dispatcher.proc.returncode}:\n{dispatcher.tail()}")
            log(f"  draining: {left:,} due, {receiver.received:,} delivered: " + rss_line(points[-1][2], dispatcher.proc.pid))
        if left:
            log(f"  stopped draining with {left:,} rows due: BENCH_SOAK_DRAIN_MAX_SECONDS={SOAK_DRAIN_MAX_SECONDS} reached")
        return left
    finally:
        engine.dispose()


class Receiver:
    """The soak's SpaceONE: a tiny HTTP/1.1 server on 127.0.0.1 that reads each event and answers ``{}``,
    keeping only a count (a receiver that kept the events would grow, not the gateway)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.received = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go out in two writes: with Nagle's algorithm the body waited for the
            # client's delayed ACK of the headers, 40 ms a reply, which held the dispatcher to ~25 events/s
            # a connection (the soaks before session 25 blamed the dispatcher for it).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received += 1  # one handler thread per connection; a lost increment is no matter
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/monitoring/v1/webhook/bench/AccessKey/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SOAK_CONFIG = BENCH_CONFIG.replace("route:\n  sinks: [itms]", """  - name: spaceone
    type: spaceone
    url: %s
route:
  sinks: [itms, spaceone]""")
"""The bench config with a spaceone sink beside itms: every webhook also queues a delivery."""
assert SOAK_CONFIG != BENCH_CONFIG


def soak(wrk: str, workdir: Path, dbs: Databases, db: str) -> dict:
    """SOAK_REQUESTS webhooks in chunks to ``gateway serve --no-dispatcher``, while a ``gateway worker``
    delivers each to a local receiver through the spaceone sink: RSS of the gunicorn workers and of
    the dispatcher process after every chunk."""
    log(f"[soak] gateway on {db}: {SOAK_REQUESTS} webhooks, route [itms, spaceone] delivered by a `gateway worker`"
        f" to a local receiver; RSS every {SOAK_CHUNK}")
    receiver = Receiver()
    url_db = dbs.fresh(db, "soak")
    config = SOAK_CONFIG % receiver.url
    server, url = start_gateway(workdir, url_db, f"{db}-soak", db, config, ("--no-dispatcher",))
    dispatcher = Server(f"gateway worker ({db}-soak)", [str(BIN / "gateway"), "worker"],
                        gateway_env(workdir, url_db, db, config), workdir / f"worker-{db}-soak.log")
    try:
        warm = run_wrk(wrk, url, WARMUP)
        rate = max(warm["accepted_per_s"], 50.0)
        pids = server.workers() + [dispatcher.proc.pid]
        points = [(0, 0, rss_kib(pids))]
        sent, non_2xx, socket_errors, started = 0, {}, {}, time.monotonic()
        while sent < SOAK_REQUESTS:
            if time.monotonic() - started > SOAK_MAX_SECONDS:
                log(f"  stopped at {sent}: BENCH_SOAK_MAX_SECONDS={SOAK_MAX_SECONDS} reached")
                break
            want = min(SOAK_CHUNK, SOAK_REQUESTS - sent)
            r = run_wrk(wrk, url, max(2, round(want / rate)))
            sent += r["accepted"]
            rate = max(r["accepted_per_s"], 50.0)
            for k, v in r["non_2xx"].items():
                non_2xx[k] = non_2xx.get(k, 0) + v
            for k, v in r["socket_errors"].items():
                socket_errors[k] = socket_errors.get(k, 0) + v
            points.append((sent, receiver.received, rss_kib(pids)))
            if dispatcher.proc.poll() is not None:
                raise RuntimeError(f"the dispatcher exited with {dispatcher.proc.returncode}:\n{dispatcher.tail()}")
            log(f"  {sent:>7} accepted ({r['accepted_per_s']:.0f}/s, p99 {r['p99_ms']:.1f} ms), {receiver.received} delivered: "
                + rss_line(points[-1][2], dispatcher.proc.pid))
        due = drain_soak(url_db, receiver, dispatcher, pids, sent, points)
        if server.workers() != pids[:-1]:
            log(f"  NOTE: worker pids changed during the soak: {pids[:-1]} -> {server.workers()}")
    finally:
        dispatcher.stop()
        server.stop()
        receiver.close()
    first, last = points[0][2], points[-1][2]
    first_chunk, _, after_first = points[1] if len(points) > 2 else points[0]
    growth = {p: last.get(p, 0) - first.get(p, 0) for p in first}
    growth_after = {p: last.get(p, 0) - after_first.get(p, 0) for p in first}
    log("  growth start->end: " + ", ".join(f"pid {p} {g / 1024:+.1f} MiB" for p, g in growth.items()))
    log(f"  growth {first_chunk}->end: " + ", ".join(f"pid {p} {g / 1024:+.1f} MiB" for p, g in growth_after.items()))
    if non_2xx or socket_errors:
        log(f"  NON-2xx {non_2xx}; socket errors {socket_errors}")
    roles = {p: "dispatcher" if p == dispatcher.proc.pid else "worker" for p in first}
    for role in ("worker", "dispatcher"):
        worst = max(g for p, g in growth_after.items() if roles[p] == role) / 1024
        record("memory", f"{role} RSS growth after warm-up, {sent:,} webhooks", db, worst, SOAK_FLAT_MIB,
               higher_is_better=False, unit="MiB",
               detail=f"the largest of {sum(r == role for r in roles.values())} {role} process(es), from "
                      f"{first_chunk:,} webhooks (the first chunk, warm-up) to {sent:,} and their deliveries:"
                      f" {receiver.received:,} delivered, {due:,} still due at the end")
    return dict(db=db, sent=sent, points=points, growth_kib=growth, first_chunk=first_chunk, roles=roles,
                delivered=receiver.received, due=due, growth_after_first_chunk_kib=growth_after, non_2xx=non_2xx,
                socket_errors=socket_errors)


# --------------------------------------------------------------------------- report

def machine_facts(dbs: Databases) -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                   if l.startswith("MemTotal:"))
    import sqlite3

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": dbs.server_version() if "postgresql" in DBS + SOAK_DBS else "not used",
        "wrk": wrk_version[0].split(" [")[0] if wrk_version else "?",
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip(),
    }


def med(rs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rs)


def summary(facts: dict, results: dict, soaks: list[dict], slows: list[dict]) -> list[str]:
    lines = ["", "=" * 100, "SUMMARY" + (f" (medians of {RUNS} runs)" if RUNS > 1 else ""), ""]
    lines += [f"machine: {facts['nproc']} CPUs, {facts['cpu']}, {facts['memory']} RAM, Linux {facts['kernel']}",
              f"         Python {facts['python']}, SQLite {facts['sqlite']}, PostgreSQL {facts['postgresql']}, "
              f"{facts['wrk']}, commit {facts['git']}, {facts['date']}",
              f"load:    wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{DURATION}s (after {WARMUP}s warm-up), "
              f"{FINGERPRINTS} fingerprints, {RECOVERY_PCT}% recoveries, unique uuids; "
              f"servers: {WORKERS} gunicorn front workers x "
              + ", ".join(f"{threads_for(db)} threads (floor {threads_for(db, 'floor')}) on {db}" for db in DBS), ""]
    if results:
        head = f"{'database':<11}{'target':<9}{'accepted/s':>11}{'non-2xx':>9}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}" \
               f"{'worker RSS start->end MiB':>28}{'CPU ms/req':>11}{'others':>8}{'gw/floor':>10}"
        lines += [head, "-" * len(head)]
        verdicts = []
        for db, by_target in results.items():
            gw, fl = by_target["gateway"], by_target["floor"]
            # The ratio only when both were measured (BENCH_TARGETS may name one), and the floor accepted any.
            ratio = None
            if gw and fl and med(fl, "accepted_per_s"):
                ratio = med(gw, "accepted_per_s") / med(fl, "accepted_per_s")
            for target, rs in (("gateway", gw), ("floor", fl), ("http", by_target["http"])):
                if not rs:
                    continue
                last = rs[-1]["rss"]
                rss = ("+".join(f"{v / 1024:.0f}" for v in last.get("start", {}).values()) + " -> "
                       + "+".join(f"{v / 1024:.0f}" for v in last.get("end", {}).values()))
                non2 = sum(sum(r["non_2xx"].values()) + sum(r["socket_errors"].values()) for r in rs)
                lines.append(f"{db:<11}{target:<9}{med(rs, 'accepted_per_s'):>11.0f}{non2:>9}"
                             f"{med(rs, 'p50_ms'):>8.1f}{med(rs, 'p95_ms'):>8.1f}{med(rs, 'p99_ms'):>8.1f}"
                             f"{rss:>28}{statistics.median(r['cpu']['server_ms_per_request'] for r in rs):>11.2f}"
                             f"{max(r['cpu']['others_cores'] for r in rs):>8.2f}"
                             f"{(f'{ratio:.0%}' if target == 'gateway' and ratio is not None else ''):>10}")
            if not gw:
                verdicts.append(f"{db}: gateway not measured")
                continue
            rate, p99 = med(gw, "accepted_per_s"), med(gw, "p99_ms")
            if ratio is not None:
                fraction = (f"floor fraction {ratio:.0%} {'>=' if ratio >= TARGET_FLOOR_FRACTION else '<'} "
                            f"{TARGET_FLOOR_FRACTION:.0%} [{'met' if ratio >= TARGET_FLOOR_FRACTION else 'MISSED'}]")
            else:
                fraction = "floor accepted nothing" if fl else "floor not measured"
            verdicts.append(
                f"{db}: accepted/s {rate:.0f} {'>=' if rate >= TARGET_RATE else '<'} {TARGET_RATE} "
                f"[{'met' if rate >= TARGET_RATE else 'MISSED'}]; {fraction}; p99 {p99:.1f} ms "
                f"{'<=' if p99 <= TARGET_P99_MS else '>'} {TARGET_P99_MS} "
                f"[{'met' if p99 <= TARGET_P99_MS else 'MISSED'}]")
            if by_target["http"] and med(by_target["http"], "accepted_per_s"):
                http = by_target["http"]
                verdicts.append(f"  stretch, against the HTTP floor (no database): {rate / med(http, 'accepted_per_s'):.0%}"
                                f" of its {med(http, 'accepted_per_s'):.0f}/s, p99 {p99 / med(http, 'p99_ms'):.2f}x its"
                                f" {med(http, 'p99_ms'):.1f} ms")
        lines += ["(CPU ms/req: gunicorn master + workers per response; others: cores used by processes that are",
                  " neither the server, wrk nor PostgreSQL during the run, the worst run — above ~0.2 the machine was shared)"]
        lines += ["", f"targets (gateway, {CONNECTIONS} connections):"] + [f"  {v}" for v in verdicts]
    if slows:
        lines += ["", f"slow clients: wrk -c{SLOW_CONNECTIONS} -d{SLOW_DURATION}s while {SLOW_CLIENTS} connections drip "
                      f"a byte every {SLOW_DRIP_SECONDS}s (target: p99 < {TARGET_SLOW_P99_MS} ms)"]
        for r in slows:
            met = r["p99_ms"] < TARGET_SLOW_P99_MS
            lines.append(f"  {r['db']}: {r['accepted_per_s']:.0f} accepted/s, p99 {r['p99_ms']:.1f} ms "
                         f"[{'met' if met else 'MISSED'}] (without them: {r['alone_accepted_per_s']:.0f}/s, p99 "
                         f"{r['alone_p99_ms']:.1f} ms), non-2xx {sum(r['non_2xx'].values())}, "
                         f"slow connections still open at the end {r['slow_unanswered']}/{SLOW_CLIENTS}")
    for s in soaks:
        pts = s["points"]
        lines += ["", f"soak ({s['db']}): RSS MiB by webhooks accepted and events delivered"
                      f" ({s['delivered']:,} delivered to the receiver, {s['due']:,} still due at the end)",
                  "  accepted  delivered " + "  ".join(f"{s['roles'][p]:>10}" for p in pts[0][2])]
        for sent, delivered, rss in pts:
            lines.append(f"  {sent:>8} {delivered:>10} " + "  ".join(f"{v / 1024:10.1f}" for v in rss.values()))
        g = s["growth_kib"]
        ga = s["growth_after_first_chunk_kib"]
        lines.append("  growth start->end: " + ", ".join(f"{v / 1024:+.1f}" for v in g.values())
                     + f" MiB; after the first chunk ({s['first_chunk']})->end: "
                     + ", ".join(f"{v / 1024:+.1f}" for v in ga.values()) + " MiB"
                     + (f"; NON-2xx {s['non_2xx']}" if s["non_2xx"] else ""))
        if s["sent"] < 1_000_000:
            lines.append(f"  (only {s['sent']:,} webhooks: issue 16's target is flat over 1,000,000 — "
                         f"run `make bench BENCH_SOAK=1 BENCH_SOAK_REQUESTS=1000000` for that)")
    lines.append("=" * 100)
    return lines


def record_targets(results: dict) -> None:
    """Issue 16's ingest-against-the-floor ratios (medians of the runs) into bench/targets.py's one table."""
    from bench.targets import record

    for db, by_target in results.items():
        gw, fl = by_target["gateway"], by_target["floor"]
        if not (gw and fl and med(fl, "accepted_per_s") and med(fl, "p99_ms")):
            continue  # a ratio needs both sides measured
        runs = f"median of {len(gw)} run{'s' if len(gw) > 1 else ''} of {DURATION}s at {CONNECTIONS} connections"
        rate_gw, rate_fl = med(gw, "accepted_per_s"), med(fl, "accepted_per_s")
        record("ingest", "gateway/floor accepted/s", db, rate_gw / rate_fl, FLOOR_TARGETS.get(db, 0.95),
               higher_is_better=True, unit="ratio", detail=f"{rate_gw:,.0f}/s vs floor {rate_fl:,.0f}/s, {runs}")
        p99_gw, p99_fl = med(gw, "p99_ms"), med(fl, "p99_ms")
        record("ingest", "gateway/floor p99", db, p99_gw / p99_fl, FLOOR_P99_RATIO, higher_is_better=False,
               unit="ratio", detail=f"{p99_gw:.1f} ms vs floor {p99_fl:.1f} ms, {runs}")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    dbs = Databases(workdir)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ok = False
    try:
        wrk = ensure_wrk()
        facts = machine_facts(dbs)
        log(f"bench: work dir {workdir}; {facts['nproc']} CPUs ({facts['cpu']}); {facts['date']}")
        results = {} if SOAK_ONLY else compare(wrk, workdir, dbs)
        slows = [] if SOAK_ONLY or not SLOW_CLIENTS else [slow_clients(wrk, workdir, dbs, db) for db in SLOW_DBS]
        soaks = [soak(wrk, workdir, dbs, db) for db in SOAK_DBS] if SOAK_REQUESTS > 0 else []
        for line in summary(facts, results, soaks, slows):
            log(line)
        record_targets(results)
        if OUT:
            Path(OUT).write_text(json.dumps({"machine": facts, "results": results, "soaks": soaks, "slow_clients": slows}, indent=1,
                                            default=str))
        ok = True
    except KeyboardInterrupt as exc:
        log(f"bench interrupted ({exc}); stopping servers")
    except Exception as exc:
        log(f"bench FAILED: {exc}")
        for server in Server.started[-2:]:
            log(f"--- {server.name} log tail ({server.logfile}) ---\n{server.tail()}")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        Server.stop_all()
        try:
            dbs.drop_all()
        except Exception as exc:
            log(f"could not drop the bench databases: {exc}")
        if ok or not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
