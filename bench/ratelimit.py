"""What a rate-limited source's webhook pays for its token: ``take`` timed on SQLite and PostgreSQL.

    .venv/bin/python bench/ratelimit.py [POSTGRES_URL]

Prints the mean and p99 of one ``take`` (one bucket statement in its own transaction) for one
thread, beside the mean of a whole accepted webhook through the app on the same database, so
the share of the hot path is plain.  Without a PostgreSQL URL only SQLite is measured.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 2000


def timed(call, rounds: int) -> list[float]:
    times = []
    for n in range(rounds):
        started = time.perf_counter()
        call(n)
        times.append((time.perf_counter() - started) * 1000)
    return times


def report(name: str, times: list[float]) -> None:
    times = sorted(times)
    print(f"  {name:<28} mean {statistics.mean(times):6.3f} ms   p99 {times[int(len(times) * 0.99)]:6.3f} ms")


def measure(url: str) -> None:
    from gateway.app import create_app
    from gateway.config import RateLimit
    from gateway.pipeline import ratelimit
    from gateway.store.db import upgrade

    upgrade(url)
    config = Path(tempfile.mkdtemp()) / "gateway.yaml"
    config.write_text("sources:\n  - key: plain\n    type: whatap\n  - key: limited\n    type: whatap\n"
                      "    rate_limit: 1000000/s\nsinks:\n  - name: itms\n    type: itms\nroute:\n  sinks: [itms]\n")
    app = create_app({"DATABASE_URL": url, "CONFIG": str(config)})
    engine = app.extensions["gateway"].engine
    print(engine.dialect.name)
    report("take in its own transaction", timed(lambda n: ratelimit.take_alone(engine, "bench", RateLimit(1e6, 10**6)),
                                                 ROUNDS))
    client = app.test_client()
    for key in ("plain", "limited"):
        times = timed(lambda n: client.post(f"/hooks/whatap/{key}/", json={
            "pcode": 1, "title": "cpu high", "uuid": f"{key}-{time.time_ns()}", "level": "warning"}), ROUNDS // 4)
        report(f"webhook, source {key}", times)
    engine.dispose()


if __name__ == "__main__":
    measure(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    if len(sys.argv) > 1:
        measure(sys.argv[1])
