"""Gunicorn settings and hooks for ``gateway serve``: the buffering front (gateway/web/front.py),
dispatchers in the workers, SIGHUP as a config reload.

Gunicorn's own SIGHUP restarts every worker, and a worker that cannot load an invalid
file would fail to boot; instead the master passes SIGHUP on to the running workers,
and each re-reads gateway.yaml in place, keeping its old config if the new one is invalid.
"""
import os
import shutil
import signal
from typing import Optional

from prometheus_client import multiprocess

from gateway.settings import Settings
from gateway.store.db import groups_commits
from gateway.web.front import FrontWorker

# Only the settings, the front and the database module (for its group-commit default) are imported
# here: this module also runs in the master, and gateway metrics imported there would write the
# master's own gauge files (the last-reload gauge is their minimum across processes, so a master's 0
# would pin it); none of the three imports them.  Workers import the rest in hooks.
SETTINGS = Settings.from_environ()


class GatewayWorker(FrontWorker):
    """A front worker whose SIGHUP re-reads gateway.yaml, also when it arrives during boot.

    Gunicorn resets SIGHUP to its default (terminate) before it loads the app, so a reload
    sent while a worker boots killed it, and its replacement could then fail to boot on a
    file made invalid meanwhile, which stops the whole server.  This worker remembers such
    a reload and applies it once booted.
    """

    ready = False
    reload_pending = False
    read_timeout = SETTINGS.read_timeout

    def body_limit(self) -> int:
        from gateway.web.common import MAX_API_BODY

        return max(self.wsgi.extensions["gateway"].runtime.snapshot.config.max_body_size, MAX_API_BODY)

    def init_signals(self):
        super().init_signals()
        signal.signal(signal.SIGHUP, self.handle_reload)
        signal.siginterrupt(signal.SIGHUP, False)

    def handle_reload(self, *_):
        if self.ready:
            self.wsgi.extensions["gateway"].runtime.reload()
        else:
            self.reload_pending = True


worker_class = "gateway.web.gunicorn_conf.GatewayWorker"


def default_threads(database_url: str, group_commit: Optional[bool] = None) -> int:
    """Threads per worker, unless GATEWAY_THREADS says: on SQLite 6 with group commit (the default),
    else 1; 2 on PostgreSQL.

    SQLite takes one writer at a time.  Without group commit a second thread in a worker only
    competes for the GIL with the thread holding the write lock, which then holds it longer
    (1,211/s with 1 thread against 1,154/s with 2); with it, the threads' webhooks wait together
    for one commit, so more of them share each sync.  PostgreSQL overlaps one thread's round
    trips with another's work (855/s with 1 thread against 1,008/s with 2).  Measured in bench/HISTORY.md.
    """
    if database_url.startswith("sqlite"):
        return 6 if groups_commits(database_url, group_commit) else 1
    return 2


threads = SETTINGS.threads or default_threads(SETTINGS.database_url, SETTINGS.group_commit)
graceful_timeout = 20
KEEPALIVE_REQUESTS = SETTINGS.keepalive_requests
forwarded_allow_ips = ",".join(sorted(SETTINGS.forwarded_allow_ips))
"""gunicorn's own trust in X-Forwarded-Proto: the proxies the app trusts (gateway/web/proxies.py), no others
(gunicorn's default trusts 127.0.0.1)."""
control_socket_disable = True  # several gateways on one machine must not fight over one socket


def when_ready(server):
    def forward_hup():
        server.log.info("SIGHUP: asking %d workers to reload the gateway config", len(server.WORKERS))
        for pid in list(server.WORKERS):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    server.handle_hup = forward_hup


def pre_request(worker, req):
    """Close a keep-alive connection after KEEPALIVE_REQUESTS requests, as nginx's
    ``keepalive_requests`` does.

    Each worker accepts connections for itself and keeps them for as long as the client
    sends, so a sender's connection pool could stay pinned to one worker while the others
    idle (measured: with 32 connections, some runs had one of two workers doing all the
    work, at half the throughput).  A reconnect lets whichever worker accepts first take it.
    Not 1,000 (nginx's default): in a 20 s make bench run a connection then never
    reconnects, and 3 of 6 servers started with one worker holding every connection
    (0.00 + 1.05 cores).  The price of 100 is a longer tail when connections move, on
    PostgreSQL p99 56-62 ms against 42-50 ms in the balanced runs with 1,000.
    """
    if req.req_number >= KEEPALIVE_REQUESTS:
        req.must_close = True


def post_worker_init(worker):
    from gateway.app import settle_heap
    from gateway.pipeline.giveway import GIVE_WAY, count_requests
    from gateway.pipeline.outbox import Dispatcher, worker_name
    from gateway.pipeline.retention import RetentionSchedule
    from gateway.store.db import start_wal_checkpointer

    gateway = worker.wsgi.extensions["gateway"]
    start_wal_checkpointer(gateway.engine)
    worker.ready = True
    if worker.reload_pending:
        gateway.runtime.reload()
    delivers = gateway.settings.dispatcher
    gateway.runtime.wakeups.start(announce=True, listen=delivers)
    if delivers:
        # One sender per sink here: a web worker's senders share its interpreter lock with the request threads,
        # and with four, PostgreSQL ingest fell from 200/s to 148/s at p99 5.2 s while delivering (bench/outbox.py).
        # `gateway worker` keeps SENDERS: it serves no requests.  Each send waits for the worker's requests (giveway).
        worker.wsgi.wsgi_app = count_requests(worker.wsgi.wsgi_app, gateway.runtime.requests)
        worker.dispatcher = Dispatcher(gateway.runtime, senders=1, give_way=GIVE_WAY)
        worker.dispatcher.start()
        worker.retention = RetentionSchedule(gateway.runtime, worker_name())
        worker.retention.start()
    settle_heap()  # last: what the worker loaded above lives as long as it does


DISPATCHER_STOP_SECONDS = 10
"""What a stopping worker gives its deliveries in flight, well within ``graceful_timeout``."""


def worker_exit(server, worker):
    """Hand back the worker's claims as it stops (a restart, SIGTERM), so no row waits for
    them to run out; deliveries in flight finish, or are cut and retried elsewhere."""
    dispatcher = getattr(worker, "dispatcher", None)
    if dispatcher is not None:
        worker.retention.stop()
        dispatcher.stop(DISPATCHER_STOP_SECONDS)


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the per-run directories ``gateway serve`` made (metrics files, last valid config)."""
    last_good = SETTINGS.last_good_config
    for path in (os.environ.get("PROMETHEUS_MULTIPROC_DIR"), last_good and os.path.dirname(last_good)):
        if path:
            shutil.rmtree(path, ignore_errors=True)
