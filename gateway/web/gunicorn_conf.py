"""Gunicorn hooks for ``gateway serve``: dispatchers in the workers, SIGHUP as a config reload.

Gunicorn's own SIGHUP restarts every worker, and a worker that cannot load an invalid
file would fail to boot; instead the master passes SIGHUP on to the running workers,
and each re-reads gateway.yaml in place, keeping its old config if the new one is invalid.
"""
import os
import signal

from prometheus_client import multiprocess

worker_class = "gthread"
threads = int(os.environ.get("GATEWAY_THREADS", "4"))
graceful_timeout = 20
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


def post_worker_init(worker):
    gateway = worker.wsgi.extensions["gateway"]
    signal.signal(signal.SIGHUP, lambda *_: gateway.runtime.reload())
    signal.siginterrupt(signal.SIGHUP, False)
    if os.environ.get("GATEWAY_DISPATCHER", "1") != "0":
        from gateway.pipeline.outbox import Dispatcher

        Dispatcher(gateway.runtime).start()


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
