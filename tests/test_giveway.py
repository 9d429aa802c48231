"""A dispatcher inside a web worker lets the worker's requests go first (``gateway.pipeline.giveway``)."""
from __future__ import annotations

import threading
import time

import pytest

from gateway.pipeline.giveway import InFlight, count_requests
from testkit.outbox import gateway_maker


@pytest.fixture
def gateway(make_app, receiver):
    return gateway_maker(make_app, receiver)


def test_the_app_counts_the_requests_it_is_serving(gateway):
    gw = gateway()
    app = gw.client.application
    app.wsgi_app = count_requests(app.wsgi_app, gw.runtime.requests)  # as a delivering serve worker does
    seen = []
    app.before_request(lambda: seen.append(gw.runtime.requests._count))
    gw.client.get("/health/live")
    gw.post("p")
    assert seen == [1, 1] and gw.runtime.requests._count == 0
    assert gw.client.get("/no-such-page").status_code == 404 and gw.runtime.requests._count == 0


def test_wait_idle_returns_when_the_last_request_leaves():
    in_flight = InFlight()
    assert in_flight.wait_idle(0)
    in_flight.enter()
    in_flight.enter()
    assert not in_flight.wait_idle(0.05)
    started = time.monotonic()  # before the timers start: the last leave comes 0.2 s or more after it
    threading.Timer(0.1, in_flight.leave).start()
    threading.Timer(0.2, in_flight.leave).start()
    assert in_flight.wait_idle(10)
    # Not at the first leave (0.1 s), nor at the timeout (the last wake-up lost); a stall may add a second or two.
    assert 0.15 < time.monotonic() - started < 5


def test_a_giving_way_dispatcher_sends_nothing_while_a_request_is_in_flight(gateway, receiver):
    gw = gateway()
    alerts = [gw.post(f"p{n}") for n in range(3)]
    gw.dispatcher.give_way = 5.0
    gw.runtime.requests.enter()  # a webhook being served in this worker
    sender = threading.Thread(target=gw.dispatcher.run_once, args=("hook", gw.worker))
    sender.start()
    time.sleep(0.3)
    assert receiver.requests == []  # waiting for the request, not for its 5 s
    gw.runtime.requests.leave()
    sender.join(timeout=3)
    assert not sender.is_alive()
    assert [gw.row(a, "hook")["status"] for a in alerts] == ["delivered"] * 3
