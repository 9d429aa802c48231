"""The HTTP front of ``gateway serve``: a gunicorn worker that reads each request whole, on an
asyncio loop, before a thread runs the application on it.

With gunicorn's gthread worker a thread reads the request off the socket itself, so a client
that drips its request a byte at a time holds that thread: one such client stalled half the
webhooks of two one-thread workers, two stalled them all.  Here one event loop per worker
reads any number of requests at once, each within a read deadline (``read_timeout``; 408
past it); only a complete request reaches the thread pool (``threads``), and the loop writes
the response the thread hands back.  Multi-process scaling, signals and hooks stay
gunicorn's.

Requests are parsed by gunicorn's own parser and body readers and the WSGI environ is built
by ``gunicorn.http.wsgi.create``, so a request means what it meant under gthread.  Those are
gunicorn's internals (``Request``, ``Unreader``, ``_expected_100_continue``), hence the pin to
one major version in setup.cfg: check them before allowing the next.  What the
front refuses itself (408, 413, 414, 431, a malformed request, too many connections) is JSON
like every other error, and counted in ``gateway_http_rejected_total{reason}``.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http import HTTPStatus
from typing import Optional

from gunicorn.http import Request
from gunicorn.http import wsgi
from gunicorn.http.body import ChunkedReader
from gunicorn.http.errors import (
    ExpectationFailed, ForbiddenProxyRequest, LimitRequestHeaders, LimitRequestLine, NoMoreData,
    ParseException, UnsupportedTransferCoding,
)
from gunicorn.http.unreader import Unreader
from gunicorn.workers import base

from gateway.logs import REQUEST_ID_HEADER, request_id

log = logging.getLogger("gateway.requests")

MAX_HEAD = 64 * 1024
"""Request line and headers buffered at most per request; gunicorn's field limits apply within."""
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_BODY_LIMIT = 1024 * 1024
LINGER = 2.0
"""After refusing a request, how long its remaining input is read and dropped before closing:
closing a socket with unread input resets it, and the client would lose the answer."""
_HEX = frozenset(b"0123456789abcdefABCDEF")


class FrontError(Exception):
    """A request the front answers itself, before the application sees it."""

    def __init__(self, status: int, message: str, code: Optional[str] = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.code = code or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        self.request: Optional[Request] = None
        """The request refused, when its head was read: its method, path and X-Request-ID are kept."""

    def response(self) -> bytes:
        """The answer, logged as the application logs its own (``gateway.web.requestlog``)."""
        given = next((value for name, value in self.request.headers if name == REQUEST_ID_HEADER.upper()), None) \
            if self.request is not None else None
        rid = request_id(given)
        method, path = (self.request.method, "-") if self.request is not None else ("-", "-")
        log.info("%s %s %s request_id=%s (refused by the front: %s)", method, path, self.status, rid, self.code,
                 extra={"method": method, "path": path, "source": None, "status": self.status, "request_id": rid})
        body = json.dumps({"error": {"code": self.code, "message": self.message}}).encode()
        head = [f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", "Connection: close", f"{REQUEST_ID_HEADER}: {rid}",
                *(f"{name}: {value}" for name, value in self.headers.items())]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_PARSE_STATUS = ((LimitRequestLine, 414, "uri_too_long"), (LimitRequestHeaders, 431, None),
                 (UnsupportedTransferCoding, 501, None), (ExpectationFailed, 417, None),
                 (ForbiddenProxyRequest, 403, None))


def refusal(exc: ParseException) -> FrontError:
    """gunicorn's parse error as the status gunicorn itself answers it with."""
    status, code = next(((status, code) for kind, status, code in _PARSE_STATUS if isinstance(exc, kind)),
                        (400, None))
    return FrontError(status, str(exc) or exc.__class__.__name__, code)


class _Received(Unreader):
    """What the loop has read of a request: the parser reads from it and never waits."""

    def __init__(self, data: bytes):
        super().__init__()
        self.unread(data)

    def chunk(self, size_hint=None) -> bytes:
        return b""


class _Output:
    """Where gunicorn's Response writes: the whole response, for the loop to send."""

    def __init__(self):
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)

    send = sendall


class FrontWorker(base.Worker):
    """The worker class: ``read_timeout`` and ``body_limit()`` are what a subclass may set."""

    read_timeout = DEFAULT_READ_TIMEOUT
    loop: Optional[asyncio.AbstractEventLoop] = None

    def body_limit(self) -> int:
        """The largest body any route takes: a chunked body past it is refused here (413); a
        larger declared Content-Length goes to the application unread, which refuses it."""
        return DEFAULT_BODY_LIMIT

    def run(self) -> None:
        from gateway import metrics  # in the worker: the master must not write metric files

        self.rejected = metrics.HTTP_REJECTED
        self.pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="request")
        self.connections: dict[asyncio.Task, bool] = {}  # task -> a request is under way on it
        asyncio.run(self._serve())

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)

    async def _serve(self) -> None:
        self.stopping = asyncio.Event()
        self.loop = asyncio.get_running_loop()  # after stopping: handle_exit needs both
        acceptors = [asyncio.create_task(self._accept(listener.sock)) for listener in self.sockets]
        while self.alive and self.ppid == os.getppid():
            self.notify()
            try:
                await asyncio.wait_for(self.stopping.wait(), 1.0)
            except TimeoutError:
                pass
        for acceptor in acceptors:
            acceptor.cancel()
        await self._finish()

    async def _accept(self, listener) -> None:
        """One connection at a time, yielding after each: the workers share the listening socket,
        and one that took every waiting connection at once (as asyncio's own server does, up
        to 100) left the others idle while it served a whole burst of clients alone."""
        listener.setblocking(False)
        while True:
            sock, _ = await self.loop.sock_accept(listener)
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEAD)
            self.loop.create_task(self._connection(reader, writer))
            await asyncio.sleep(0)

    async def _finish(self) -> None:
        """Graceful stop: idle connections close now, requests under way get graceful_timeout."""
        for task, busy in list(self.connections.items()):
            if not busy:
                task.cancel()
        deadline = self.loop.time() + self.cfg.graceful_timeout
        while self.connections and self.loop.time() < deadline:
            self.notify()
            await asyncio.wait(list(self.connections), timeout=1.0)
        for task in list(self.connections):
            task.cancel()
        self.pool.shutdown(wait=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.connections[task] = False
        try:
            if len(self.connections) > self.cfg.worker_connections:
                raise FrontError(503, "too many open connections; retry later", "too_many_connections",
                                 {"Retry-After": "1"})
            number = 1
            while await self._exchange(reader, writer, number):
                self.connections[task] = False
                number += 1
            await self._close(reader, writer)
        except FrontError as error:
            await self._refuse(error, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away, or stopped reading its answer
        finally:
            writer.transport.abort()  # closes it, if nothing did (also when cancelled at a stop)
            del self.connections[task]

    async def _refuse(self, error: FrontError, reader, writer) -> None:
        self.rejected.labels(error.code).inc()
        writer.write(error.response())
        await self._close(reader, writer)

    @staticmethod
    async def _close(reader, writer) -> None:
        """Send what is queued, then drop the client's input until it closes too (LINGER at
        most; the caller closes): closing with input unread would reset the connection and
        lose the answer."""
        try:
            async with asyncio.timeout(LINGER):
                await writer.drain()
                writer.write_eof()
                while await reader.read(65536):
                    pass
        except (ConnectionError, TimeoutError, OSError):
            pass

    async def _exchange(self, reader, writer, number: int) -> bool:
        """Read one request, answer it; whether the connection stays open for another."""
        deadline = self.loop.time() + self.read_timeout
        try:  # the wait for a request to start: the keep-alive timeout after the first one
            first = await asyncio.wait_for(reader.read(1), self.read_timeout if number == 1 else self.cfg.keepalive)
        except TimeoutError:
            return False
        if not first:
            return False
        self.connections[asyncio.current_task()] = True
        try:
            async with asyncio.timeout_at(deadline):
                req, body = await self._read_request(first, reader, writer, number)
        except TimeoutError:
            raise FrontError(408, f"the request did not arrive whole within {self.read_timeout:g} s") from None
        peer, sockname = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        response, keep = await self.loop.run_in_executor(self.pool, self._respond, req, body, peer, sockname)
        writer.write(response)
        async with asyncio.timeout(self.read_timeout):
            await writer.drain()
        return keep and self.alive

    async def _read_request(self, first: bytes, reader, writer, number: int) -> tuple[Request, bytes]:
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:  # let gunicorn say which limit, if one of its own
            head = first + await reader.read(MAX_HEAD)
        req = self._parse(head, writer.get_extra_info("peername"), number)
        limit = self.body_limit()
        if isinstance(req.body.reader, ChunkedReader):
            try:
                raw = await self._read_chunked(reader, writer, req, limit)
            except FrontError as error:
                error.request = req
                raise
        elif req.body.reader.length > limit:
            req.force_close()  # the body stays unread
            return req, b""
        else:
            self._continue(req, writer)
            raw = await reader.readexactly(req.body.reader.length)
        req.unreader.unread(raw)
        try:
            return req, req.body.read()
        except ParseException as exc:
            raise refusal(exc) from None

    def _parse(self, head: bytes, peer, number: int) -> Request:
        try:
            return Request(self.cfg, _Received(head), peer, number)
        except NoMoreData:
            raise FrontError(431, f"the request line and headers exceed {MAX_HEAD} bytes") from None
        except ParseException as exc:
            raise refusal(exc) from None

    @staticmethod
    def _continue(req: Request, writer) -> None:
        """Answer ``Expect: 100-continue`` here, where the body is read, not in wsgi.create."""
        if req._expected_100_continue:
            req._expected_100_continue = False
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _read_chunked(self, reader, writer, req: Request, limit: int) -> bytes:
        """The chunked body as sent, framing and trailers included, for gunicorn's reader to decode."""
        self._continue(req, writer)
        raw, size = bytearray(), 0
        while True:
            line = await self._line(reader)
            raw += line
            digits = line[:-2].split(b";", 1)[0].rstrip(b" \t")
            if not digits or not _HEX.issuperset(digits):
                raise FrontError(400, f"invalid chunk size line {bytes(line[:40])!r}")
            chunk = int(digits, 16)
            if not chunk:
                break
            size += chunk
            if size > limit:
                raise FrontError(413, f"body exceeds the limit of {limit} bytes", "body_too_large")
            raw += await reader.readexactly(chunk + 2)
        while True:  # trailers, up to the empty line
            line = await self._line(reader)
            raw += line
            if line == b"\r\n":
                return bytes(raw)
            if len(raw) - size > MAX_HEAD:
                raise FrontError(431, f"chunk framing and trailers exceed {MAX_HEAD} bytes")

    @staticmethod
    async def _line(reader) -> bytes:
        try:
            return await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise FrontError(400, f"a chunk line longer than {MAX_HEAD} bytes") from None

    def _respond(self, req: Request, body: bytes, peer, sockname) -> tuple[bytes, bool]:
        """In a pool thread: run the application, as gthread's handle_request does; the whole
        response and whether the connection may be kept."""
        out, resp, environ, started = _Output(), None, {}, datetime.now()
        try:
            self.cfg.pre_request(self, req)
            resp, environ = wsgi.create(req, out, peer, sockname, self.cfg)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                for item in respiter:
                    resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(respiter, "close"):
                    respiter.close()
        except Exception:
            self.log.exception("Error handling request %s %s", req.method, req.uri)
            error = FrontError(500, "unexpected server error; it has been logged", "internal_error")
            error.request = req
            return error.response(), False
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return b"".join(out.parts), not resp.should_close()
