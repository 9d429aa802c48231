"""HTTP for sink plugins: a ``requests`` adapter whose calls a delivery's ``Deadline`` cuts.

``requests`` applies a timeout to connecting and to each read, never to the whole call, so
a destination that trickles its reply a byte at a time holds a delivery for as long as it
likes.  Mount ``DeadlineAdapter`` and make each call inside ``adapter.within(deadline)``:
when the deadline passes, the sockets the call uses are shut down, and the call fails at
once with ``requests.ConnectionError``.
"""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Iterator

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from gateway.deadline import Deadline

_calls = threading.local()


class _Call:
    """The connections one call has checked out; ``cut`` shuts them, and any it connects later."""

    def __init__(self):
        self.connections: list = []
        self.cut = False

    def shut(self) -> None:
        self.cut = True
        for connection in list(self.connections):
            _shut(connection)


def _shut(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:  # the plain socket's shutdown: an SSL socket's own would race the reading thread
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class _Cuttable:
    """Connection mixin: a connection made after the cut is shut as soon as it exists."""

    def connect(self):
        super().connect()
        call = getattr(_calls, "current", None)
        if call is not None and call.cut:
            _shut(self)


class _HTTPConnection(_Cuttable, HTTPConnection):
    pass


class _HTTPSConnection(_Cuttable, HTTPSConnection):
    pass


class _Tracking:
    """Pool mixin: record the connections the current call takes, forget those it gives back."""

    def _get_conn(self, timeout=None):
        connection = super()._get_conn(timeout)
        call = getattr(_calls, "current", None)
        if call is not None:
            call.connections.append(connection)
        return connection

    def _put_conn(self, conn) -> None:
        call = getattr(_calls, "current", None)
        if call is not None and conn in call.connections:
            call.connections.remove(conn)
        super()._put_conn(conn)


class _HTTPPool(_Tracking, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_Tracking, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` (same arguments) whose calls end when a ``Deadline`` passes."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    @contextmanager
    def within(self, deadline: Deadline) -> Iterator[None]:
        """Calls made inside, from this thread, are cut when ``deadline`` passes."""
        call = _calls.current = _Call()
        try:
            with deadline.cutting(call.shut):
                yield
        finally:
            _calls.current = None
