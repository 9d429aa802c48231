"""The HTTP front of a real ``gateway serve``: slow clients, read deadlines and its own errors.

Real sockets on 127.0.0.1 play the slow senders: a webhook sender that drips its request a
byte at a time must not hold a worker thread, and is cut at the read deadline with a 408.
"""
from __future__ import annotations

import json
import select
import shutil
import socket
import threading
import time

import pytest
import requests
import testkit
from testkit.support import serve_environment, serving, wait_until

READ_TIMEOUT = 6.0
SLOW = 200


def metric(base: str, name: str, **labels: str) -> float:
    return testkit.metric(requests.get(f"{base}/metrics", timeout=5).text, name, **labels)


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """The one response on ``sock``, read until the server closes it: (status, headers, body)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


class Drippers:
    """``count`` connections that each send a byte every ``interval`` seconds and never finish
    their request: half still in their headers, half in a body they announced."""

    def __init__(self, base: str, count: int, interval: float = 0.5):
        self.socks, self.opened, self.answers = [], [], {}
        for n in range(count):
            sock = socket.create_connection(address(base), timeout=5)
            start = b"POST /hooks/testsrc/src/ HTTP/1.1\r\nHost: test\r\n"
            if n % 2:
                start += b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            sock.sendall(start)
            self.socks.append(sock)
            self.opened.append(time.monotonic())
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        while not self.stopped.wait(self.interval):
            pending = [s for s in self.socks if s not in self.answers]
            readable, _, _ = select.select(pending, [], [], 0) if pending else ([], [], [])
            for sock in readable:  # the server answered: read it whole, drip no more
                self.answers[sock] = (time.monotonic(), answer(sock))
            for sock in pending:
                if sock not in self.answers:
                    try:
                        sock.send(b"x")
                    except OSError:
                        pass  # cut: its answer is read on the next round

    def unanswered(self) -> int:
        readable, _, _ = select.select(self.socks, [], [], 0)
        return len(self.socks) - len(readable)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        for sock in self.socks:
            sock.close()


def serve(tmp_path, database_url: str, config_path: str):
    """``gateway serve`` of conftest's default config (source ``src``) on ``database_url``."""
    environment = serve_environment(tmp_path, config_path, database_url, GATEWAY_ADMIN_TOKEN="front-token")
    with serving(environment, "--read-timeout", str(READ_TIMEOUT)) as (_, base):
        yield base


@pytest.fixture
def gateway(tmp_path, database_url, write_config):
    """On both databases: whether slow senders starve ingest depends on how it writes."""
    yield from serve(tmp_path, database_url, write_config())


@pytest.fixture
def sqlite_gateway(tmp_path, sqlite_template, write_config):
    """On SQLite only: what the front refuses never reaches a database."""
    shutil.copy(sqlite_template, tmp_path / "gateway.db")
    yield from serve(tmp_path, f"sqlite:///{tmp_path / 'gateway.db'}", write_config())


def test_a_connection_past_worker_connections_is_503_json(tmp_path, sqlite_template, write_config):
    """gunicorn's worker_connections bounds the connections one worker keeps open (3 here)."""
    shutil.copy(sqlite_template, tmp_path / "gateway.db")
    environment = serve_environment(tmp_path, write_config(), f"sqlite:///{tmp_path / 'gateway.db'}",
                                    GUNICORN_CMD_ARGS="--worker-connections 3")
    with serving(environment, workers=1) as (_, base):
        held = [socket.create_connection(address(base), timeout=5) for _ in range(3)]
        try:
            time.sleep(0.5)  # accepted by now
            with socket.create_connection(address(base), timeout=5) as extra:
                status, headers, body = answer(extra)
        finally:
            for sock in held:
                sock.close()
        assert (status, headers["retry-after"]) == (503, "1")
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        wait_until(lambda: requests.get(f"{base}/health", timeout=5).status_code == 200)  # once they are gone


def test_slow_senders_hold_no_worker_and_are_cut_at_the_read_deadline_with_408(gateway):
    """200 connections dripping their requests: every other webhook and /health is still
    answered while they are open, and each of them gets a 408 JSON error at the deadline."""
    drippers = Drippers(gateway, SLOW)
    try:
        answers = [requests.post(f"{gateway}/hooks/testsrc/src/", json={"id": f"n{n}", "title": "disk"},
                                 timeout=5).status_code for n in range(20)]
        health = requests.get(f"{gateway}/health", timeout=5).status_code
        assert drippers.unanswered() == SLOW  # all 200 were still open meanwhile
        assert (answers, health) == ([202] * 20, 200)

        deadline = time.monotonic() + READ_TIMEOUT + 15
        while len(drippers.answers) < SLOW and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(drippers.answers) == SLOW
        for sock, (when, (status, headers, body)) in drippers.answers.items():
            waited = when - drippers.opened[drippers.socks.index(sock)]
            assert waited >= READ_TIMEOUT - 0.5
            assert (status, headers["content-type"], headers["connection"]) == (408, "application/json", "close")
            assert json.loads(body)["error"]["code"] == "request_timeout"
    finally:
        drippers.close()
    assert metric(gateway, "gateway_http_rejected_total", reason="request_timeout") == SLOW
    assert metric(gateway, "gateway_webhooks_accepted_total", source="src", outcome="accepted") == 20


FRONT_ERRORS = {
    "oversized header": (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
                         431, "request_header_fields_too_large"),
    "too many headers": (b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 120 + b"\r\n",
                         431, "request_header_fields_too_large"),
    "request line too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "uri_too_long"),
    "no request line": (b"\x16\x03\x01 hello\r\n\r\n", 400, "bad_request"),
    "Content-Length and Transfer-Encoding": (
        b"POST /hooks/testsrc/src/ HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n", 400, "bad_request"),
    "a bad chunk size": (b"POST /hooks/testsrc/src/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"zz\r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
    "an unknown transfer coding": (b"POST /hooks/testsrc/src/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: br\r\n\r\n",
                                   501, "not_implemented"),
    "a chunked body past every limit": (
        b"POST /hooks/testsrc/src/ HTTP/1.1\r\nHost: t\r\nX-Request-ID: front-1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"100000\r\n" + b"a" * 0x100000 + b"\r\n") * 2 + b"0\r\n\r\n", 413, "body_too_large"),
}


def test_the_front_answers_its_own_refusals_in_json_and_counts_them(sqlite_gateway):
    """With an X-Request-ID too: the client's when its head was read, else a fresh one."""
    for name, (raw, status, code) in FRONT_ERRORS.items():
        with socket.create_connection(address(sqlite_gateway), timeout=5) as sock:
            try:
                sock.sendall(raw)
            except OSError:
                pass  # refused before it was all sent: the answer is still there to read
            got, headers, body = answer(sock)
        assert (got, headers.get("content-type")) == (status, "application/json"), name
        assert json.loads(body)["error"]["code"] == code, name
        given = b"X-Request-ID: front-1" in raw
        assert headers["x-request-id"] == "front-1" if given else len(headers["x-request-id"]) == 32, name
        assert metric(sqlite_gateway, "gateway_http_rejected_total", reason=code) >= 1, name


def test_a_body_sent_after_100_continue_is_read_and_a_pipelined_request_answered(sqlite_gateway):
    """The front answers ``Expect: 100-continue`` itself, since it reads the body before the
    application runs; requests sent back to back on one connection are all answered, a chunked
    one with a chunk extension and a trailer too."""
    body = json.dumps({"id": "expect-1", "title": "disk"}).encode()
    with socket.create_connection(address(sqlite_gateway), timeout=5) as sock:
        sock.sendall(b"POST /hooks/testsrc/src/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body + b"POST /hooks/testsrc/src/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b'10;note=1\r\n{"id": "chunk-1"\r\n11\r\n, "title": "cpu"}\r\n0\r\nX-Trailer: t\r\n\r\n'
                     b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, _, rest = answer(sock)
    assert status == 202
    assert rest.count(b"HTTP/1.1 202 ") == 1 and b"HTTP/1.1 200 OK" in rest and b'"worker_pid"' in rest
