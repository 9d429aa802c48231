"""A delivery ends by its deadline even when the destination trickles its reply byte by byte.

The SpaceONE sink (the installed plugin) posts to a real server on 127.0.0.1 that answers one
byte every 50 ms: each read finishes well within the sink's 10 s timeout, so only the core's
deadline (``gateway.http.DeadlineAdapter``) ends the call.  On PostgreSQL a second test takes
the database away in the middle of such a delivery: the dispatcher cannot renew its claim, so
it cuts the delivery before the claim could run out and another dispatcher send the row again.
"""
from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from testkit.support import OutboxDriver, TcpProxy, wait_until

from gateway.pipeline.outbox import Dispatcher
from gateway.store.models import DeliveryRow

BODY = b"{}" + b" " * 99_998
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
"""An answer that takes the trickler well over an hour: only a cut ends it (``{}`` alone would have taken 2 s)."""


class Trickler:
    """Reads a request, then sends ``REPLY`` one byte every ``pause`` seconds."""

    def __init__(self, pause: float = 0.05):
        self.pause = pause
        self.requests = 0
        self.hung_up = threading.Event()
        """Set when the client shut the connection (the delivery was cut)."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/monitoring/v1/webhook/wh-1/key/events"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.requests += 1
                for byte in REPLY:
                    conn.sendall(bytes([byte]))
                    time.sleep(self.pause)
                    if self._shut_by_client(conn):
                        break
            except OSError:
                pass
            self.hung_up.set()

    @staticmethod
    def _shut_by_client(conn: socket.socket) -> bool:
        """The client's end of the stream came (a cut shuts the socket; it may be closed only later)."""
        try:
            return conn.recv(1, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False

    def close(self) -> None:
        self._listener.close()


def config(url: str) -> str:
    """The test source, the incident store and the SpaceONE sink posting to ``url`` (10 s timeout)."""
    return (f"sources: [{{key: src, type: testsrc}}]\n"
            f"sinks: [{{name: itms, type: itms}}, {{name: spaceone, type: spaceone, url: '{url}', timeout: 10s}}]\n"
            f"route: {{sinks: [itms, spaceone]}}\n")


@pytest.fixture
def trickler():
    server = Trickler()
    yield server
    server.close()


def post(driver: OutboxDriver) -> int:
    r = driver.client.post("/hooks/testsrc/src/", json={"id": "1", "title": "slow", "problem": "p"})
    assert r.status_code == 202, r.json
    return driver.deliveries(sink="spaceone")[0]["id"]


def test_a_trickled_reply_is_cut_at_the_delivery_deadline(make_app, trickler):
    driver = OutboxDriver(make_app(config(trickler.url)), "w")
    row = post(driver)
    started = time.monotonic()
    assert Dispatcher(driver.runtime, deadline=1.0).run_once("spaceone", "w") == 1
    took = time.monotonic() - started
    assert 1.0 <= took < 8.0, took  # uncut, the answer would take over an hour; a stall costs a second or two
    detail = driver.delivery(row)
    assert (detail["status"], detail["attempts"], trickler.requests) == ("pending", 1, 1)
    assert detail["last_error"].startswith("cut at the delivery deadline; ")


def test_a_delivery_is_cut_before_a_claim_it_cannot_renew_runs_out(make_app, trickler, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("a database server to lose is PostgreSQL's; SQLite is a file in the process")
    target = urlsplit(database_url.replace("postgresql+psycopg", "postgresql"))
    proxy = TcpProxy(target.hostname, target.port or 5432)
    proxied = database_url.replace(f"@{target.netloc.split('@')[1]}", f"@127.0.0.1:{proxy.port}")
    driver = OutboxDriver(make_app(config(trickler.url), DATABASE_URL=proxied), "w")
    direct = OutboxDriver(make_app(config(trickler.url)), "w")  # not through the proxy
    row = post(driver)
    dispatcher = Dispatcher(driver.runtime, lease=2.0, deadline=30.0)
    finished = {}

    def deliver():
        started = time.monotonic()
        dispatcher.run_once("spaceone", "w")
        finished["took"] = time.monotonic() - started

    worker = threading.Thread(target=deliver, daemon=True)
    try:
        worker.start()
        wait_until(lambda: trickler.requests, timeout=10, interval=0.01)
        proxy.down()  # the claim can no longer be renewed: it runs out 2 s after it was last renewed
        cut = trickler.hung_up.wait(10)
        with direct.runtime.engine.connect() as conn:  # when the claim runs out, by the database's clock
            claimed_until = conn.execute(select(DeliveryRow.claimed_until).where(DeliveryRow.id == row)).scalar_one()
        proxy.up()  # let the dispatcher record the outcome
        worker.join(10)
    finally:
        proxy.down()
    assert cut, "the delivery was not cut, though its claim could not be renewed"
    assert not worker.is_alive()
    (attempt,) = direct.delivery(row)["attempt_log"]
    assert attempt["error"].startswith("cut at the delivery deadline")
    ended = datetime.fromisoformat(attempt["started_at"]) + timedelta(milliseconds=attempt["duration_ms"])
    assert ended < claimed_until, f"the delivery outlived its claim by {ended - claimed_until}"
