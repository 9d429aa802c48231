"""How long a delivery may take: the lease on an outbox row and the deadline of one ``deliver`` call."""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

DELIVERY_LEASE_SECONDS = 6.0
"""How long an outbox row stays claimed after its dispatcher last renewed the claim.

A dispatcher renews the claims it holds four times per lease while it works, so rows of a
dispatcher that died are taken up by another within this many seconds.
"""

DELIVERY_DEADLINE_SECONDS = 30.0
"""The longest one ``deliver`` call may run: the core cuts it there (see ``Deadline``)."""


class Deadline:
    """When a delivery must be over.  The dispatcher cuts it then, or sooner when it can no
    longer renew its claim on the row (another dispatcher could take the row and send it
    again): it calls what the sink registered with ``cutting``, e.g. closing its socket, so
    even a reply that trickles in byte by byte ends in time.
    """

    def __init__(self, seconds: float = math.inf):
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._cuts: list[Callable[[], None]] = []
        self.cut = False
        """True once the delivery was cut."""

    def remaining(self) -> float:
        """Seconds left (0 once cut): bound each timeout of the call by it."""
        return 0.0 if self.cut else max(0.0, self._at - time.monotonic())

    @contextmanager
    def cutting(self, cut: Callable[[], None]) -> Iterator[None]:
        """While inside, ``cut()`` (from another thread) ends the work when the deadline passes."""
        with self._lock:
            self._cuts.append(cut)
            already = self.cut
        try:
            if already:
                cut()
            yield
        finally:
            with self._lock:
                self._cuts.remove(cut)

    def expire(self) -> None:
        """The dispatcher's side: cut now (idempotent)."""
        with self._lock:
            if self.cut:
                return
            self.cut = True
            cuts = list(self._cuts)
        for cut in cuts:
            cut()

    @property
    def at(self) -> float:
        """When it passes, on ``time.monotonic()``'s clock."""
        return self._at
