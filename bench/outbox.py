#!/usr/bin/env python3
"""Issue 16's outbox targets: a ``spaceone`` sink delivering to a local receiver, under backlog.

Per database (BENCH_OUTBOX_DBS, default sqlite,postgresql), one gateway on a fresh database with one
``whatap`` source routed to one ``spaceone`` sink whose URL is bench/receiver.py's, and dispatchers as
production runs them: in ``gateway serve``'s workers, or (BENCH_OUTBOX_WORKER_THREADS=N) in one
``gateway worker --threads N`` beside ``gateway serve --no-dispatcher``
(at niceness BENCH_OUTBOX_WORKER_NICE, 0).  In one run:

1. **lag**: BENCH_OUTBOX_RATE (200) webhooks/s for BENCH_OUTBOX_LAG_SECONDS (20) with the receiver up.
   Lag = the event's arrival at the receiver (its ``time.time()``) minus the alert's ``received_at``
   (the gateway's clock when the webhook came in): one machine, one wall clock.  The ingest p99 of
   this phase is the "no drain" reference of step 3.
2. **delivery rate**: the receiver goes down (503), BENCH_OUTBOX_ROWS (20,000) rows are queued by wrk at full
   speed, the receiver comes up, and the rows are timed from then to the arrival of the last of them.
3. **backlog**: the same with BENCH_OUTBOX_BACKLOG (100,000) rows, while BENCH_OUTBOX_RATE webhooks/s go on
   being ingested: the drain rate, and ingest p99 during the drain against step 1's.
4. **ordering**: over every event received, per ordering key (the problem's fingerprint), an event whose
   delivery id is below one already received for that key is a violation.
5. **memory**: RSS of the dispatching processes after step 1 (warm), after step 2 (drained once) and at
   the end.  Warm to end covers the first deep drain, whose high-water mark (half of it the malloc
   arenas of the sender threads, measured in bench/HISTORY.md, "Session 11") a process keeps; drained
   once to end tells that apart from a leak: it covers the backlog drained beside ingest (step 3).

On PostgreSQL, BENCH_OUTBOX_HISTORY=N adds N delivered rows before step 2 (months of deliveries kept by
retention), and BENCH_OUTBOX_DELIVERIES_OPTIONS sets storage parameters on ``deliveries`` (autovacuum's).

Each figure goes to bench/targets.py (area "outbox").  Only 127.0.0.1 is contacted; every process is
stopped and every database dropped at the end.  See bench/README.md, "Outbox under backlog".
"""
from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import bench as b  # noqa: E402  servers, databases, wrk
from bench.targets import record  # noqa: E402

DBS = [d.strip() for d in (os.environ.get("BENCH_OUTBOX_DBS") or "sqlite,postgresql").split(",") if d.strip()]
RATE = b.env_int("BENCH_OUTBOX_RATE", 200)
LAG_SECONDS = b.env_int("BENCH_OUTBOX_LAG_SECONDS", 20)
ROWS = b.env_int("BENCH_OUTBOX_ROWS", 20_000)
BACKLOG = b.env_int("BENCH_OUTBOX_BACKLOG", 100_000)
WORKER_THREADS = b.env_int("BENCH_OUTBOX_WORKER_THREADS", 0)
WORKER_NICE = b.env_int("BENCH_OUTBOX_WORKER_NICE", 0)
"""The ``gateway worker``'s niceness: what a lower CPU share (``cpu_shares`` in compose, a smaller CPU
request in Kubernetes) does for it on a host it shares with ``gateway serve``."""
DRAIN_TIMEOUT = b.env_int("BENCH_OUTBOX_DRAIN_TIMEOUT", 600)
HISTORY = b.env_int("BENCH_OUTBOX_HISTORY", 0)
"""PostgreSQL: delivered rows put in the outbox after step 1, as months of deliveries kept by retention
are: autovacuum's default trigger (20 % of the table changed) grows with them."""
TABLE_OPTIONS = os.environ.get("BENCH_OUTBOX_DELIVERIES_OPTIONS", "")
"""PostgreSQL: storage parameters set on ``deliveries`` after the migrations, e.g.
``autovacuum_vacuum_scale_factor=0``: another autovacuum setting to measure."""
SENDERS = 8
"""Threads of the paced sender: enough that one slow answer does not hold back the schedule."""
POLL_MIN, POLL_MAX = 0.5, 5.0
"""Seconds between two counts of the rows left to drain (``Outbox.wait_drained``)."""

TARGET_RATE = 1000.0
TARGET_LAG_P99_S = 1.0
TARGET_P99_RATIO = 1.25
"""Ingest p99 while the backlog drains over ingest p99 without one: "unchanged", within noise."""
TARGET_RSS_GROWTH_MIB = 5.0
KEPT_UP = 0.95
"""Below this share of RATE ingested, the lag and the p99s were not measured at RATE: they are not recorded."""

WEBHOOK_ID, ACCESS_KEY = "webhook-bench", "AccessKeyBench16"
CONFIG = """\
# Written by bench/outbox.py: one WhaTap source, everything to one SpaceONE sink (bench/receiver.py).
sources:
  - key: bench
    type: whatap
    name: bench
sinks:
  - name: spaceone
    type: spaceone
    url: {url}
route:
  sinks: [spaceone]
"""
METRICS = [("cpu", "CPU usage high"), ("memory", "Memory usage high"), ("disk", "Disk usage high"),
           ("heap_used", "Heap usage high"), ("gc_time", "GC time too long"), ("active_tx", "Too many active tx"),
           ("tps", "TPS dropped"), ("resp_time", "Response time slow"), ("error_rate", "Error rate high"),
           ("thread_count", "Thread count high")]
log = b.log


class Receiver:
    """bench/receiver.py in a process of its own, so its CPU is not the gateway's or the bench's."""

    def __init__(self, workdir: Path):
        self.proc = subprocess.Popen([sys.executable, str(b.ROOT / "bench" / "receiver.py"), WEBHOOK_ID, ACCESS_KEY],
                                     stdout=subprocess.PIPE, stderr=open(workdir / "receiver.log", "wb"),
                                     start_new_session=True, text=True)
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.url = f"{self.base}/monitoring/v1/webhook/{WEBHOOK_ID}/{ACCESS_KEY}/events"

    def _call(self, method: str, path: str):
        with urllib.request.urlopen(urllib.request.Request(self.base + path, method=method), timeout=60) as reply:
            return json.loads(reply.read())

    def set_up(self, up: bool) -> None:
        self._call("POST", "/_bench/up" if up else "/_bench/down")

    def count(self) -> int:
        return self._call("GET", "/_bench/count")["events"]

    def refused(self) -> int:
        """Events answered 503 so far: the gateway's sends during outages."""
        return self._call("GET", "/_bench/count")["refused"]

    def events(self) -> list[tuple[float, int, str]]:
        return [tuple(e) for e in self._call("GET", "/_bench/events")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def webhook(nonce: str, seq: int) -> bytes:
    """One WhaTap webhook of bench/whatap.lua's mix (its fingerprints and recovery share)."""
    idx = random.randrange(b.FINGERPRINTS)
    metric, title = METRICS[idx % len(METRICS)]
    agent = idx // len(METRICS)
    recovered = random.random() * 100 < b.RECOVERY_PCT
    value = f"{80 + random.random() * 19.99:.2f}"
    message = (f"RECOVERED: {title} on was-{agent:03d}" if recovered else f"{title} on was-{agent:03d}: {value} > 80")
    return json.dumps({
        "pcode": 31337, "projectName": "bench-project", "uuid": f"{nonce}-p-{seq}", "time": int(time.time() * 1000),
        "oid": 1_000_000 + agent, "oname": f"was-{agent:03d}", "title": title, "message": message,
        "level": "Info" if recovered else "Critical", "status": "off" if recovered else "on",
        "metricName": metric, "metricValue": value, "metricThreshold": "80",
    }).encode()


class Paced:
    """Webhooks at a fixed rate until stopped.  Latency runs from when a request was due, not from when it
    was sent, so a sender held up by a slow answer counts the wait (no coordinated omission)."""

    def __init__(self, url: str, rate: int):
        self.host, port_path = url.removeprefix("http://").split(":", 1)
        self.port, path = port_path.split("/", 1)
        self.path, self.rate = "/" + path, rate
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.stopping = threading.Event()
        self._next = itertools.count()
        self._nonce = secrets.token_hex(4)
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(SENDERS)]
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def _send(self) -> None:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        while not self.stopping.is_set():
            seq = next(self._next)
            due = self.started + seq / self.rate
            if (wait := due - time.monotonic()) > 0 and self.stopping.wait(wait):
                return
            body = webhook(self._nonce, seq)
            try:
                conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                status = reply.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            self.latencies.append(time.monotonic() - due)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> dict:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=35)
        seconds = time.monotonic() - self.started
        lat = sorted(self.latencies)
        return {"sent": len(lat), "per_s": len(lat) / seconds, "statuses": dict(self.statuses),
                "p50_ms": 1000 * percentile(lat, 50), "p99_ms": 1000 * percentile(lat, 99)}


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


class Outbox:
    """Reads of the sink's deliveries, by the bench, on its own engine."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine

        self.engine = create_engine(url)

    def pending(self, up_to_id: int | None = None) -> int:
        """Rows still to deliver (``deliveries.scheduled`` ones are not backlog)."""
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            return conn.execute(self._pending(select(func.count()), up_to_id)).scalar()

    def stuck(self, up_to_id: int, limit: int = 10) -> list[str]:
        """The first rows ``pending`` counts, each with what decides whether a claim takes it: why a
        drain stopped, told before the bench drops the database."""
        from sqlalchemy import select

        from gateway.store.models import DeliveryRow as D

        columns = (D.id, D.ordering_key, D.attempts, D.blocked, D.claimed_by, D.claimed_until, D.next_attempt_at,
                   D.last_error)
        with self.engine.connect() as conn:
            rows = conn.execute(self._pending(select(*columns), up_to_id).order_by(D.id).limit(limit)).all()
        return [", ".join(f"{column.key}={value}" for column, value in zip(columns, row)) for row in rows]

    @staticmethod
    def _pending(query, up_to_id: int | None):
        from gateway.pipeline.deliveries import scheduled
        from gateway.store.models import DeliveryRow as D

        query = query.where(D.status == "pending", ~scheduled())
        return query if up_to_id is None else query.where(D.id <= up_to_id)

    def vacuums(self) -> dict:
        """PostgreSQL: whether autovacuum runs, how often it has vacuumed the deliveries table, and
        the dead row versions left in it (each one an index entry a claim steps over until vacuumed)."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            if conn.dialect.name != "postgresql":
                return {}
            on = conn.execute(text("SHOW autovacuum")).scalar()
            runs, dead = conn.execute(text("SELECT autovacuum_count, n_dead_tup FROM pg_stat_user_tables "
                                           "WHERE relname = 'deliveries'")).one()
            return {"autovacuum": on, "autovacuum_runs": runs, "dead_versions": dead}

    def deadlocks(self) -> int | None:
        """PostgreSQL: deadlocks detected in this database so far (each one a transaction that waited
        out ``deadlock_timeout``, then was rolled back and run again); None on SQLite."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            if conn.dialect.name != "postgresql":
                return None
            return conn.execute(text("SELECT deadlocks FROM pg_stat_database "
                                     "WHERE datname = current_database()")).scalar()

    def add_history(self, rows: int) -> None:
        """``rows`` delivered rows of the last 90 days over 1,000 problems, all of the oldest alert
        (an outbox row needs one); then ANALYZE, as autovacuum would have."""
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO deliveries (alert_id, sink_name, ordering_key, status, attempts, next_attempt_at,"
                " created_at, finished_at, blocked)"
                " SELECT (SELECT min(id) FROM alerts), 'spaceone', 'history-' || (n % 1000), 'delivered', 1, t, t, t, false"
                " FROM (SELECT n, now() - (n % 7776000) * interval '1 second' AS t"
                "       FROM generate_series(1, :rows) AS n) AS made"), {"rows": rows})
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE deliveries"))

    def set_table_options(self, options: str) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE deliveries SET ({options})"))

    def last_id(self) -> int:
        from sqlalchemy import func, select

        from gateway.store.models import DeliveryRow as D

        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(D.id), 0))).scalar()

    def rows(self) -> dict[int, tuple[str, float, str, bool]]:
        """Every delivery: its ordering key, its alert's ``received_at`` (epoch seconds), its status, and
        whether it is a refresh (a firing sent again ``refresh_interval`` after it was delivered)."""
        from sqlalchemy import select

        from gateway.store.models import AlertRow as A, DeliveryRow as D, ProblemDelivery as P

        query = (select(D.id, D.ordering_key, A.received_at, D.status, P.refresh)
                 .join(A, A.id == D.alert_id).outerjoin(P, P.delivery_id == D.id))
        with self.engine.connect() as conn:
            return {i: (key, received.timestamp(), status, bool(refresh))
                    for i, key, received, status, refresh in conn.execute(query)}

    def wait_drained(self, up_to_id: int | None, timeout: float) -> bool:
        """Count ``pending`` until none is left.  Counting a deep backlog reads every pending row: on
        PostgreSQL 50 ms a count at 100,000 rows, every 0.5 s a tenth of a core taken from what is
        measured.  So between counts the bench sleeps half the time the rows left would take at the rate
        seen since the last count (``POLL_MIN`` to ``POLL_MAX``), and counts often only near the end."""
        deadline = time.monotonic() + timeout
        last: tuple[int, float] | None = None
        while (now := time.monotonic()) < deadline:
            left = self.pending(up_to_id)
            if left == 0:
                return True
            pause = POLL_MIN
            if last is not None and last[0] > left:
                per_s = (last[0] - left) / (now - last[1])
                pause = min(POLL_MAX, max(POLL_MIN, left / per_s / 2))
            last = (left, now)
            time.sleep(pause)
        return False


def queue_backlog(wrk: str, hook_url: str, outbox: Outbox, rows: int) -> tuple[int, float]:
    """wrk at full speed until ``rows`` rows are pending; returns (rows pending, webhooks/s)."""
    rate, started, accepted = 800.0, time.monotonic(), 0
    while (pending := outbox.pending()) < rows:
        result = b.run_wrk(wrk, hook_url, max(2, round((rows - pending) / rate)))
        accepted += result["accepted"]
        rate = max(result["accepted_per_s"], 50.0)
    return pending, accepted / (time.monotonic() - started)


def cpu_seconds(pids: list[int], postgres: bool) -> tuple[float, float]:
    """CPU used so far by ``pids`` (with their threads), and by PostgreSQL's processes when ``postgres``."""
    return sum(b.proc_cpu(p) for p in pids), b.postgres_cpu() if postgres else 0.0


def drain(receiver: Receiver, outbox: Outbox, label: str, pids: list[int], postgres: bool) -> dict:
    """Bring the receiver up and wait until every row queued so far has been delivered; with the CPU
    the dispatching processes, the receiver and PostgreSQL used per row meanwhile."""
    last = outbox.last_id()
    backlog = outbox.pending(last)
    before, receiver_before = cpu_seconds(pids, postgres), b.proc_cpu(receiver.proc.pid)
    vacuums_before = outbox.vacuums()
    up_at = time.time()
    receiver.set_up(True)
    if not outbox.wait_drained(last, DRAIN_TIMEOUT):
        raise RuntimeError(f"{label}: {outbox.pending(last)} rows still pending after {DRAIN_TIMEOUT}s")
    after, receiver_after = cpu_seconds(pids, postgres), b.proc_cpu(receiver.proc.pid)
    vacuums_after = outbox.vacuums()
    arrivals = [t for t, i, _ in receiver.events() if t >= up_at and i <= last]
    seconds = max(arrivals) - up_at
    return {"rows": backlog, "last_id": last, "seconds": seconds, "per_s": backlog / seconds,
            "first_after_s": min(arrivals) - up_at, "cpu_ms": 1000 * (after[0] - before[0]) / backlog,
            "postgres_cpu_ms": 1000 * (after[1] - before[1]) / backlog,
            "receiver_cpu_ms": 1000 * (receiver_after - receiver_before) / backlog,
            "vacuums": vacuums_after and {**vacuums_after, "autovacuum_runs": vacuums_after["autovacuum_runs"]
                                                             - vacuums_before["autovacuum_runs"]}}


def describe(r: dict) -> str:
    flowing = r["rows"] / max(r["seconds"] - r["first_after_s"], 1e-9)
    return (f"{r['rows']} rows in {r['seconds']:.1f}s = {r['per_s']:.0f}/s (first event {r['first_after_s']:.2f}s "
            f"after up: the paused sink's probe; {flowing:.0f}/s from it); CPU per row: dispatching processes "
            f"{r['cpu_ms']:.2f} ms, receiver {r['receiver_cpu_ms']:.2f} ms"
            + (f", PostgreSQL {r['postgres_cpu_ms']:.2f} ms" if r["postgres_cpu_ms"] else "")
            + (f"; autovacuum {r['vacuums']['autovacuum']}: {r['vacuums']['autovacuum_runs']} runs on deliveries "
               f"meanwhile, {r['vacuums']['dead_versions']:,} dead row versions at the end" if r["vacuums"] else ""))


def check(events: list[tuple[float, int, str]], rows: dict) -> dict:
    """Per ordering key, events must arrive in delivery id order; a second arrival of an id is a duplicate."""
    newest: dict[str, int] = {}
    seen: set[int] = set()
    violations = duplicates = 0
    for _, delivery_id, _ in events:
        if delivery_id in seen:
            duplicates += 1
            continue
        seen.add(delivery_id)
        key = rows[delivery_id][0]
        if delivery_id < newest.get(key, 0):
            violations += 1
        newest[key] = max(newest.get(key, 0), delivery_id)
    return {"violations": violations, "duplicates": duplicates, "events": len(events),
            "dead": sum(1 for row in rows.values() if row[2] == "dead")}


def lags(events: list[tuple[float, int, str]], rows: dict, up_to_id: int) -> list[float]:
    """From each webhook's arrival at the gateway to its first event at the receiver; a refresh is left
    out (it is sent ``refresh_interval`` after the alert on purpose)."""
    first: dict[int, float] = {}
    for arrived, delivery_id, _ in events:
        if delivery_id <= up_to_id and not rows[delivery_id][3]:
            first.setdefault(delivery_id, arrived)
    return sorted(arrived - rows[i][1] for i, arrived in first.items())


def start(workdir: Path, dbs: b.Databases, db: str, receiver: Receiver) -> tuple[list[b.Server], str, str]:
    """The gateway on a fresh database; returns its servers, the webhook URL, the database URL."""
    db_url = dbs.fresh(db, "outbox")
    config = CONFIG.format(url=receiver.url)
    if not WORKER_THREADS:
        server, hook_url = b.start_gateway(workdir, db_url, f"{db}-outbox", db, config)
        return [server], hook_url, db_url
    server, hook_url = b.start_gateway(workdir, db_url, f"{db}-outbox", db, config, ("--no-dispatcher",))
    env = b.gateway_env(workdir, db_url, db, config)
    worker = b.Server(f"worker ({db})", ["nice", "-n", str(WORKER_NICE), str(b.BIN / "gateway"), "worker",
                                         "--threads", str(WORKER_THREADS)], env, workdir / f"worker-{db}.log")
    deadline = time.monotonic() + 60
    while "worker delivering" not in worker.tail():
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gateway worker did not start:\n{worker.tail()}")
        time.sleep(0.2)
    return [server, worker], hook_url, db_url


def dispatching_pids(servers: list[b.Server]) -> list[int]:
    return [servers[1].proc.pid] if WORKER_THREADS else servers[0].workers()


def run(wrk: str, workdir: Path, dbs: b.Databases, db: str) -> dict:
    receiver = Receiver(workdir)
    servers, hook_url, db_url = start(workdir, dbs, db, receiver)
    outbox = Outbox(db_url)
    try:
        if TABLE_OPTIONS and db == "postgresql":
            outbox.set_table_options(TABLE_OPTIONS)
            log(f"[{db}] deliveries set ({TABLE_OPTIONS})")
        log(f"[{db}] 1. lag: {RATE} webhooks/s for {LAG_SECONDS}s, receiver up")
        paced = Paced(hook_url, RATE)
        time.sleep(LAG_SECONDS)
        steady = paced.stop()
        lag_last = outbox.last_id()
        if not outbox.wait_drained(lag_last, 60):
            raise RuntimeError("the lag phase's rows were not delivered within 60 s; the first still pending:\n  "
                               + "\n  ".join(outbox.stuck(lag_last)))
        pids = dispatching_pids(servers)
        rss_warm = b.rss_kib(pids)
        log(f"    ingest {steady['per_s']:.0f}/s, p50 {steady['p50_ms']:.1f} ms, p99 {steady['p99_ms']:.1f} ms, "
            f"statuses {steady['statuses']}")

        if HISTORY and db == "postgresql":
            started = time.monotonic()
            outbox.add_history(HISTORY)
            log(f"[{db}] {HISTORY:,} delivered rows of history added in {time.monotonic() - started:.0f}s")
        log(f"[{db}] 2. delivery rate: receiver down, {ROWS} rows queued by wrk, receiver up")
        receiver.set_up(False)
        refused = receiver.refused()
        queued, ingest_rate = queue_backlog(wrk, hook_url, outbox, ROWS)
        log(f"    {queued} rows queued at {ingest_rate:.0f} webhooks/s; {receiver.refused() - refused} sends refused meanwhile")
        postgres = db == "postgresql"
        alone = drain(receiver, outbox, "delivery rate", pids, postgres)
        rss_drained = b.rss_kib(pids)
        log(f"    {describe(alone)}; load average {os.getloadavg()[0]:.1f}")

        log(f"[{db}] 3. backlog: receiver down, {BACKLOG} rows queued, receiver up while {RATE}/s are ingested")
        receiver.set_up(False)
        refused = receiver.refused()
        queued, ingest_rate = queue_backlog(wrk, hook_url, outbox, BACKLOG)
        log(f"    {queued} rows queued at {ingest_rate:.0f} webhooks/s; {receiver.refused() - refused} sends refused meanwhile")
        paced = Paced(hook_url, RATE)
        backlog = drain(receiver, outbox, "backlog", pids, postgres)
        during = paced.stop()
        log(f"    {describe(backlog)}; load average {os.getloadavg()[0]:.1f}")
        log(f"    ingest meanwhile {during['per_s']:.0f}/s, p50 {during['p50_ms']:.1f} ms, p99 {during['p99_ms']:.1f} ms, "
            f"statuses {during['statuses']}")
        outbox.wait_drained(None, 60)
        rss_end = b.rss_kib(pids)
        events = receiver.events()
        rows = outbox.rows()
        lag = lags(events, rows, lag_last)
        order = check(events, rows)
        deadlocks = outbox.deadlocks()
    finally:
        for server in servers:
            server.stop()
        receiver.stop()
        outbox.engine.dispose()
    def growth(since: dict) -> float:
        return max((rss_end.get(p, 0) - since.get(p, 0)) / 1024 for p in pids)

    result = {"db": db, "steady": steady, "lag_p50": percentile(lag, 50), "lag_p99": percentile(lag, 99),
              "lag_n": len(lag), "alone": alone, "backlog": backlog, "during": during, "order": order,
              "rss_warm": rss_warm, "rss_drained": rss_drained, "rss_end": rss_end,
              "rss_growth_mib": growth(rss_warm), "rss_growth_drained_mib": growth(rss_drained)}
    log(f"    lag over {len(lag)} events: p50 {result['lag_p50'] * 1000:.0f} ms, p99 {result['lag_p99'] * 1000:.0f} ms; "
        f"ordering violations {order['violations']}, duplicates {order['duplicates']}, dead {order['dead']} of "
        f"{order['events']} events; " + ("" if deadlocks is None else f"PostgreSQL deadlocks {deadlocks}; ")
        + "dispatcher RSS "
        + ", ".join(f"{rss_warm.get(p, 0) / 1024:.1f}->{rss_drained.get(p, 0) / 1024:.1f}->{rss_end.get(p, 0) / 1024:.1f}"
                    " MiB" for p in pids) + " (warm, drained once, end)")
    return result


def report(r: dict) -> None:
    where = (f"gateway worker --threads {WORKER_THREADS} at nice {WORKER_NICE}" if WORKER_THREADS
             else f"dispatchers in {b.WORKERS} serve workers")
    db = r["db"]
    alone, backlog, order = r["alone"], r["backlog"], r["order"]
    record("outbox", "delivery rate, backlog drained alone (events/s)", db, alone["per_s"], TARGET_RATE,
           higher_is_better=True, unit="/s", detail=f"{alone['rows']} rows in {alone['seconds']:.1f}s; {where}; CPU/row {alone['cpu_ms']:.2f} ms"
           + (f" + PostgreSQL {alone['postgres_cpu_ms']:.2f} ms" if alone["postgres_cpu_ms"] else ""))
    during, steady = r["during"], r["steady"]
    kept_up = min(during["per_s"], steady["per_s"]) >= KEPT_UP * RATE
    if steady["per_s"] >= KEPT_UP * RATE:
        record("outbox", f"delivery lag p99 at {RATE} webhooks/s (s)", db, r["lag_p99"], TARGET_LAG_P99_S,
               higher_is_better=False, unit="s", detail=f"p50 {r['lag_p50']:.3f}s over {r['lag_n']} events")
    else:
        log(f"  {db}: lag not recorded: the gateway ingested {steady['per_s']:.0f} of {RATE} webhooks/s "
            f"(p99 {r['lag_p99']:.3f}s at that rate)")
    record("outbox", f"{backlog['rows']:,}-row backlog drain, {RATE}/s ingest beside (events/s)", db,
           backlog["per_s"], TARGET_RATE, higher_is_better=True, unit="/s",
           detail=f"{backlog['seconds']:.1f}s; first event {backlog['first_after_s']:.2f}s after the receiver came up")
    if kept_up:
        record("outbox", "ingest p99 while draining / without (ratio)", db, during["p99_ms"] / steady["p99_ms"],
               TARGET_P99_RATIO, higher_is_better=False, unit="x",
               detail=f"p99 {during['p99_ms']:.1f} ms vs {steady['p99_ms']:.1f} ms at {RATE}/s")
    else:
        log(f"  {db}: ingest p99 ratio not recorded: the gateway ingested {steady['per_s']:.0f} and "
            f"{during['per_s']:.0f} of {RATE} webhooks/s, so both p99s are its queue, not its latency")
    record("outbox", "per-key ordering violations", db, order["violations"], 0, higher_is_better=False,
           detail=f"{order['events']} events, {order['duplicates']} re-sent, {order['dead']} dead rows")
    record("outbox", "dispatcher RSS growth, warm to end (MiB)", db, r["rss_growth_mib"], TARGET_RSS_GROWTH_MIB,
           higher_is_better=False, unit="MiB",
           detail=f"over {alone['rows'] + backlog['rows']:,} deliveries; the largest of {len(r['rss_warm'])} processes")
    record("outbox", "dispatcher RSS growth, drained once to end (MiB)", db, r["rss_growth_drained_mib"],
           TARGET_RSS_GROWTH_MIB, higher_is_better=False, unit="MiB",
           detail=f"over the {backlog['rows']:,} deliveries beside ingest; the largest of {len(r['rss_warm'])} processes")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gateway-outbox-bench-"))
    dbs = b.Databases(workdir)
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    ok = False
    try:
        wrk = b.ensure_wrk()
        log(f"outbox bench: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
            f"rate {RATE}/s, lag {LAG_SECONDS}s, rows {ROWS}, backlog {BACKLOG}, "
            f"{'worker --threads ' + str(WORKER_THREADS) if WORKER_THREADS else 'dispatchers in serve workers'}")
        for db in DBS:
            report(run(wrk, workdir, dbs, db))
        log(f"load average at the end {os.getloadavg()[0]:.1f}")
        ok = True
    except KeyboardInterrupt:
        log("outbox bench interrupted")
    except Exception as exc:
        log(f"outbox bench FAILED: {exc}")
        for server in b.Server.started[-2:]:
            log(f"--- {server.name} log tail ({server.logfile}) ---\n{server.tail()}")
    finally:
        b.Server.stop_all()
        dbs.drop_all()
        if ok or not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
