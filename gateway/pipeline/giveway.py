"""Webhooks before deliveries: a dispatcher inside a web worker lets the worker's requests go first.

A ``gateway serve`` worker's sender shares the worker's interpreter lock with its request threads.
Draining a backlog it held the lock most of the time: in bench/outbox.py (SQLite, two workers), a
111,101-row drain at 326/s took ingest beside it from a p99 of 69 ms to 11.3 s.  With this, the
sender waits before each send while the worker has a request in flight, up to ``GIVE_WAY``: a
drain takes the time requests leave, and ``gateway worker`` (which serves none) drains at full speed.
"""
from __future__ import annotations

import threading

GIVE_WAY = 0.05
"""Seconds a sender waits at most, per send, for the worker's requests to finish: under a steady
stream of requests it still sends at least twenty a second."""


class InFlight:
    """How many requests this process is serving, as ``count_requests`` counts them: a serve worker
    that runs a dispatcher wraps its app so (gunicorn_conf), no other process pays for it."""

    def __init__(self):
        self._count = 0
        self._idle = threading.Condition()

    def enter(self) -> None:
        with self._idle:
            self._count += 1

    def leave(self) -> None:
        with self._idle:
            self._count -= 1
            if not self._count:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight, at most ``timeout`` seconds; whether none is."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._count, timeout)


def count_requests(wsgi_app, in_flight: InFlight):
    """``wsgi_app``, counting each request in ``in_flight`` until its response is produced."""

    def counted(environ, start_response):
        in_flight.enter()
        try:
            return wsgi_app(environ, start_response)
        finally:
            in_flight.leave()

    return counted
