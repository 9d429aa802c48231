#!/usr/bin/env python3
"""A lean SpaceONE webhook receiver for bench/outbox.py: keep-alive HTTP/1.1 on 127.0.0.1, one asyncio loop.

tests/testkit/spaceone.py's stand-in models SpaceONE's alerts, but it serves HTTP/1.0 (a new connection per
event, so the sink's pool is never used) from a thread per connection under one lock: it would measure
itself.  This one answers by the same rules (the stand-in's path pattern and event parsing are imported:
a wrong webhook is 400, a wrong access key 403, a body that is not JSON 500, any other body 200 ``{}``, an
unparsable event included, as SpaceONE does) and keeps, per event answered 200, its arrival time
(``time.time()``, the clock the gateway stamps ``received_at`` with), the ``X-Gateway-Delivery-Id`` and the
``event_key``.

``python bench/receiver.py WEBHOOK_ID ACCESS_KEY`` prints its port on the first line.  Control, by the bench:
``POST /_bench/down`` (answer every event 503 from now on, an outage), ``POST /_bench/up``,
``GET /_bench/count`` (events taken) and ``GET /_bench/events`` (all of them: ``[[time, id, key], ...]``).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.testkit.spaceone import PATH, _parse  # noqa: E402  the stand-in's rules, not a copy of them

UNAVAILABLE = {"detail": {"code": "ERROR_UNKNOWN", "message": "unavailable"}}


class Receiver:
    def __init__(self, webhook_id: str, access_key: str):
        self.webhook_id, self.access_key = webhook_id, access_key
        self.up = True
        self.events: list[tuple[float, int, str]] = []
        self.refused = 0

    def answer(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, object]:
        if path.startswith("/_bench/"):
            return self.control(method, path)
        arrived = time.time()
        match = PATH.match(path)
        if method != "POST" or match is None or match["webhook_id"] != self.webhook_id:
            return 400, {"detail": {"code": "ERROR_NOT_FOUND", "message": "Value not found."}}
        if match["access_key"] != self.access_key:
            return 403, {"detail": {"code": "ERROR_PERMISSION_DENIED", "message": "Permission denied."}}
        if not self.up:
            self.refused += 1
            return 503, UNAVAILABLE
        try:
            data = json.loads(body)
        except ValueError:
            return 500, {"detail": {"code": "ERROR_UNKNOWN", "message": "JSON Parsing Error"}}
        event = _parse(data) or {}
        self.events.append((arrived, int(headers.get("x-gateway-delivery-id") or 0), event.get("event_key", "")))
        return 200, {}

    def control(self, method: str, path: str) -> tuple[int, object]:
        if method == "POST" and path in ("/_bench/up", "/_bench/down"):
            self.up = path == "/_bench/up"
            return 200, {"up": self.up}
        if path == "/_bench/count":
            return 200, {"events": len(self.events), "refused": self.refused}
        if path == "/_bench/events":
            return 200, self.events
        return 404, {"detail": {"code": "ERROR_NOT_FOUND", "message": path}}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, version = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                status, reply = self.answer(method, path, headers, body)
                data = json.dumps(reply).encode()
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                             f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n".encode() + data)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def main(webhook_id: str, access_key: str) -> None:
    receiver = Receiver(webhook_id, access_key)
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
