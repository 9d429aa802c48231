"""HTTP for sink plugins: ``JsonEndpoint``, a destination a sink POSTs JSON to, and under it
a ``requests`` adapter whose calls a delivery's ``Deadline`` cuts.

``requests`` applies a timeout to connecting and to each read, never to the whole call, so
a destination that trickles its reply a byte at a time holds a delivery for as long as it
likes.  Mount ``DeadlineAdapter`` and make each call inside ``adapter.within(deadline)``:
when the deadline passes, the sockets the call uses are shut down, and the call fails at
once with ``requests.ConnectionError``.  ``JsonEndpoint`` does both.
"""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional, Union

import requests
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


class JsonEndpoint:
    """One URL a sink POSTs a JSON body to, once per delivery: pooled keep-alive connections,
    no retries of its own (the core retries), each call cut at the delivery's deadline.

    The request is prepared once, when the sink is made: its headers, and the proxies, CA bundle
    and ``.netrc`` credentials the environment gives then.  A POST only adds its body and its own
    headers, and goes straight to the transport adapter: ``Session.post`` merges the session's
    settings and scans ``os.environ`` on every call, and ``Session.send`` keeps cookies, times the
    call and looks for a redirect, none of which a delivery uses.  A backlog's drain rate is
    CPU-bound: 0.32 ms of CPU a POST to a local receiver through ``Session.post``, 0.22 ms through
    ``Session.send``, and 5 % less again through the adapter (bench/HISTORY.md, sessions 9 and 13).
    Redirects are not followed and no cookie is sent back: each delivery stands alone."""

    def __init__(self, url: str, *, verify_tls: Union[bool, str] = True,
                 headers: Optional[Mapping[str, str]] = None, pool_size: int = 10):
        self.session = requests.Session()
        self._adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", self._adapter)
        self.session.mount("https://", self._adapter)
        found = self.session.merge_environment_settings(url, {}, None, verify_tls, None)
        self._proxies, self._verify = found["proxies"], found["verify"]
        self.session.trust_env = False
        self._template = self.session.prepare_request(requests.Request(
            "POST", url, headers=dict(headers or {}), auth=requests.utils.get_netrc_auth(url)))

    def post(self, body: Any, deadline: Deadline, timeout: float,
             headers: Optional[Mapping[str, str]] = None) -> requests.Response:
        """POST ``body`` as JSON with ``headers`` added; the reply is read whole before ``deadline``.
        Raises what ``requests`` raises (``requests.RequestException``)."""
        request = self._template.copy()
        request.headers.update(headers or {})
        request.prepare_body(data=None, files=None, json=body)
        with self._adapter.within(deadline):
            response = self._adapter.send(request, timeout=timeout, verify=self._verify, proxies=self._proxies)
            response.content  # the whole reply, read before the deadline
            return response

    def close(self) -> None:
        self.session.close()
