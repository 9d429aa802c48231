"""POST /hooks/<type>/<key>/: verify, parse, fingerprint, route and store in ONE transaction.

Nothing is acknowledged before the commit, and nothing external is called on this
path except a source's own handshake.  This module walks a request to its routed alerts;
``transaction`` holds what storing them writes.  Errors are ``Rejected`` (a client error with a
JSON body); a database failure is ``Unavailable`` (503, nothing stored).
"""
from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar

from sqlalchemy import Connection, insert
from sqlalchemy.exc import DataError, SQLAlchemyError

from gateway import metrics
from gateway.bodies import MAY_HOLD_UNSTORABLE, clean_text, cleaned, parse_json
from gateway.contracts import Alert, ApiError, Headers, InboundRequest, Link, Refused, Rejected, Reply, Resource, Transaction
from gateway.fingerprints import namespaced_fingerprint
from gateway.pipeline import ratelimit, refusals
from gateway.pipeline.runtime import ActiveSource, Runtime
from gateway.pipeline.transaction import (
    AlertsSeen, CoreTransaction, Duplicate, InlineSinkFailed, alert_faults, in_transaction, insert_raw, route_alert,
    store_alerts,
)
from gateway.store.db import refusal_reason, run_in_transaction
from gateway.store.models import (
    UNSTORABLE_TEXT, AlertRow, Handshake, RawRequest, RefusedRequest, utcnow,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SECRET_HEADERS = frozenset({"authorization", "x-webhook-token", "cookie"})
"""Stored as "[redacted]": the raw journal must not become a second copy of credentials."""


class Unavailable(Exception):
    """The database could not take the request; the sender should retry."""


@dataclass
class Outcome:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


BodyReader = Callable[[int], bytes]
"""Reads the request body up to a byte limit, raising ApiError(413) past it."""

Commit = Callable[[Runtime, Callable[[Transaction], T]], T]
"""How ``_receive`` runs its storing work: ``in_transaction``, or a replay's or dry run's variant."""


@dataclass
class Seen:
    """What of a request the core had read when it was refused: the refusal is kept with it."""

    body: Optional[bytes] = None
    request: Optional[InboundRequest] = None
    verified: bool = False

    def reading(self, read_body: BodyReader) -> BodyReader:
        def read(limit: int) -> bytes:
            self.body = read_body(limit)
            return self.body
        return read


def receive(runtime: Runtime, source_type: str, source_key: str, method: str, path: str,
            headers: Mapping[str, str], read_body: BodyReader, remote_addr: str,
            on_source: Callable[[str], None] = lambda name: None) -> Outcome:
    """Handle one webhook; raises Rejected or Unavailable, counted in metrics either way.

    ``on_source`` is told the source's name (the ``source`` label) as soon as it is known."""
    started = time.perf_counter()
    try:
        source = runtime.sources.find(source_key)
    except SQLAlchemyError as exc:  # an API-created source is looked up in the database
        metrics.WEBHOOKS_RECEIVED.labels("unknown").inc()
        metrics.WEBHOOKS_REJECTED.labels("unknown", "database_unavailable").inc()
        log.error("could not look up source %r: %s", source_key, exc)
        raise Unavailable("the database is unavailable; nothing was stored, retry later") from exc
    label = source.name if source is not None else "unknown"  # not the key: it may be the secret
    on_source(label)
    metrics.WEBHOOKS_RECEIVED.labels(label).inc()
    seen = Seen()
    try:
        outcome = _receive(runtime, source, source_type, source_key, method, path, headers, seen.reading(read_body),
                           remote_addr, seen)
    except ApiError as exc:  # the source's or the core's refusal, or a body the core cannot read
        metrics.WEBHOOKS_REJECTED.labels(label, exc.code).inc()
        # Not a rate limit's 429: a row per refusal would make a flood cost a write each, which the
        # limit is there to spare (it is counted in /metrics and logged like any request).
        if source is not None and source.type == source_type and exc.code != "rate_limited":
            _keep_refusal(runtime, source, method, path, headers, remote_addr, seen, exc)
        raise
    except Unavailable:
        metrics.WEBHOOKS_REJECTED.labels(label, "database_unavailable").inc()
        raise
    metrics.WEBHOOKS_ACCEPTED.labels(label, outcome.body.get("status", "reply")).inc()
    metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
    return outcome


def _receive(runtime: Runtime, source: Optional[ActiveSource], source_type: str, source_key: str,
             method: str, path: str, headers: Mapping[str, str], read_body: BodyReader,
             remote_addr: str, seen: Seen, commit: Optional[Commit] = None,
             duplicates_since: Optional[datetime] = None) -> Outcome:
    """``duplicates_since``: where the look for the request's delivery id starts, when not a
    ``DUPLICATE_WINDOW`` before now (a replay looks from the stored request's own time)."""
    if source is None or source.type != source_type:
        raise Rejected(404, "unknown_source", f"no {source_type} source with key {source_key!r}")
    if not source.enabled:
        raise Rejected(403, "source_disabled", f"source {source_key!r} is disabled")
    if method != "POST":
        raise Rejected(405, "method_not_allowed", f"webhooks are POSTed, not sent with {method}",
                       headers={"Allow": "POST"})
    if source.rate_limit is not None and runtime.engine.dialect.name == "postgresql":
        with _storing(source, "nothing was stored"):
            _refuse_over_limit(source, ratelimit.take_alone(runtime.engine, source.key, source.rate_limit))
    snapshot = runtime.snapshot
    body = read_body(snapshot.config.max_body_size)
    payload = _decode(body)
    request = seen.request = InboundRequest(method, path, Headers(headers), body, payload, remote_addr, utcnow())
    with _plugin_guard(source):
        source.plugin.verify(request)
        seen.verified = True
        raw = _raw_values(source, request)
        if duplicates_since is not None:
            raw["duplicate_since"] = duplicates_since
        reply = source.plugin.handshake(request)
    if reply is not None:
        _store_handshake(runtime, source, request, raw, reply)
        return Outcome(reply.status, reply.body, reply.headers)

    with _plugin_guard(source):
        items = list(source.plugin.parse(request))
    alerts, refused = _sort_out(source, items, request.received_at)
    for _, refusal in refused:
        metrics.ALERTS_REFUSED.labels(source.name, refusal.code).inc()
    if refused and not alerts:
        raise _refusal(refused, len(items))
    with _plugin_guard(source):
        routed = [route_alert(snapshot, alert, source.reopen_window) for _, alert in alerts]
    external_ids = [alert.external_id for _, alert in alerts]
    own_delivery_id = raw["external_id"] is not None
    if not own_delivery_id and external_ids and all(external_ids):
        raw["external_id"] = _storable_id("|".join(external_ids))
    repeated = _repeated_in_request(external_ids)
    refused_json = [_refused_json(index, refusal) for index, refusal in refused]
    look = False
    while True:
        try:
            with _storing(source, "nothing was stored"):
                ids = (commit or in_transaction)(runtime, lambda tx: _store_within_limit(
                    tx, source, raw, routed, repeated, look, own_delivery_id))
            break
        except Duplicate:
            return Outcome(200, {"status": "duplicate", **({"refused": refused_json} if refused else {})})
        except AlertsSeen:  # rolled back: store it again, leaving out what is stored already
            look = True
        except InlineSinkFailed as failed:  # rolled back: store it again without that sink for that alert
            alert, inline, outbox = routed[failed.index]
            routed[failed.index] = (alert, [(sink, settings) for sink, settings in inline if sink is not failed.sink],
                                    outbox)
    return Outcome(202, {"status": "accepted", "alerts": [i for i in ids if i is not None], "refused": refused_json,
                         "duplicates": [index for (index, _), i in zip(alerts, ids) if i is None]})


def _sort_out(source: ActiveSource, items: list, received_at: datetime
              ) -> tuple[list[tuple[int, Alert]], list[tuple[int, Refused]]]:
    """What ``parse`` returned, as (position, completed alert) and (position, refusal): an item the
    plugin refused, one the core's checks refuse, and one the plugin fails on are refused alone.

    In a batch, the fields the core's checks name get the alert's position (``[1].severity``);
    a plugin names its fields by where they are in the payload (``alerts[1].labels``)."""
    alerts, refused = [], []
    for index, item in enumerate(items):
        if isinstance(item, Alert):
            try:
                item = _complete(source, item, received_at)
                if isinstance(item, Refused) and len(items) > 1:
                    item = Refused({f"[{index}].{name}": problem for name, problem in item.fields.items()})
            except Exception as exc:  # fingerprint or group raised, or a field of the alert is not what it should be
                log.exception("source plugin %s failed on an alert to %s", source.type, source.key)
                item = Refused({}, "unprocessable_alert",
                               f"the {source.type} plugin could not process this alert ({exc.__class__.__name__})")
        elif not isinstance(item, Refused):
            log.error("source plugin %s returned %r from parse, not an Alert or Refused", source.type, type(item))
            item = Refused({}, "unprocessable_alert", f"the {source.type} plugin returned no alert here")
        (refused if isinstance(item, Refused) else alerts).append((index, item))
    return alerts, refused


def _refused_json(index: int, refusal: Refused) -> dict:
    return {"index": index, "code": refusal.code, "message": refusal.describe(), "fields": dict(refusal.fields)}


def _refusal(refused: list[tuple[int, Refused]], count: int) -> Rejected:
    """The 422 of a request whose every alert was refused: a single alert's own refusal, or one
    naming every bad field of them all."""
    if count == 1:
        refusal = refused[0][1]
        if refusal.code == "invalid_alert" and not refusal.message:
            return Rejected.invalid(refusal.fields)
        return Rejected(422, refusal.code, refusal.describe(), fields=refusal.fields)
    fields = {name: problem for _, refusal in refused for name, problem in refusal.fields.items()}
    message = "; ".join(f"[{index}] {refusal.describe()}" for index, refusal in refused)
    return Rejected(422, "invalid_payload", f"no alert in this request could be accepted: {message}", fields=fields)


def _repeated_in_request(external_ids: list[Optional[str]]) -> set[int]:
    """Positions of alerts whose external id an earlier alert of the same request has: duplicates."""
    seen: set[Optional[str]] = set()
    repeated = set()
    for position, external_id in enumerate(external_ids):
        if external_id is not None and external_id in seen:
            repeated.add(position)
        seen.add(external_id)
    return repeated


def _keep_refusal(runtime: Runtime, source: ActiveSource, method: str, path: str, headers: Mapping[str, str],
                  remote_addr: str, seen: Seen, refusal: ApiError) -> None:
    """Keep a refused request, as the raw journal would keep it, for operators and ``gateway replay``.

    Never raises: the sender gets its 4xx whatever happens here.  A body the source cannot
    scrub (it crashed on it) is not kept, since it may hold what scrubbing would have hidden.
    """
    request = seen.request or InboundRequest(method, path, Headers(headers), seen.body or b"", None, remote_addr,
                                             utcnow())
    try:
        try:
            kept_headers, body = source.plugin.scrub(request)
        except Exception:
            log.warning("the %s plugin could not scrub a refused request to %s; its body is not kept",
                        source.type, source.key, exc_info=True)
            kept_headers, body = request.headers, b""
        refusals.keep(runtime.engine, runtime.snapshot.config.keep_refused, dict(
            _journal_values(source, request, kept_headers, body), verified=seen.verified, status=refusal.status,
            code=_storable(refusal.code, _REFUSAL_CODE_LENGTH), message=clean_text(refusal.message)))
    except Exception as exc:
        log.error("could not keep a refused request to %s (%s %s): %s", source.key, refusal.status, refusal.code, exc)


def _refuse_over_limit(source: ActiveSource, wait: float) -> None:
    """A 429 when the source is over its ``rate_limit`` (``wait``: seconds until it is not)."""
    if wait:
        raise Rejected(429, "rate_limited", f"source {source.name!r} is over its rate limit "
                       f"({source.rate_limit.rate:g}/s, burst {source.rate_limit.burst}); retry later",
                       headers={"Retry-After": ratelimit.retry_after(wait)})


def _decode(body: bytes) -> Any:
    """The JSON payload, cleaned of text no column can hold when the body may carry some,
    so that plugins, the incident store and the database all see text they can keep."""
    payload = parse_json(body)
    return cleaned(payload) if MAY_HOLD_UNSTORABLE.search(body) else payload


def _storable(text: str, limit: Optional[int]) -> str:
    """``text`` as a column of length ``limit`` can keep it: cleaned, and cut to fit."""
    text = clean_text(text)
    return text[:limit - 1] + "\u2026" if limit is not None and len(text) > limit else text


_RESOURCE_LENGTHS = tuple(AlertRow.__table__.c[f"resource_{part}"].type.length for part in ("id", "name", "type"))
_CONTENT_TYPE_LENGTH = RawRequest.__table__.c.content_type.type.length
_EXTERNAL_ID_LENGTH = RawRequest.__table__.c.external_id.type.length
_REFUSAL_CODE_LENGTH = RefusedRequest.__table__.c.code.type.length


def _storable_id(external_id: Optional[str]) -> Optional[str]:
    """An idempotency key its column can keep: one too long or unstorable is replaced by its
    digest, which keeps distinct keys distinct (cutting them would not)."""
    if external_id is None or (len(external_id) <= _EXTERNAL_ID_LENGTH
                               and not UNSTORABLE_TEXT.search(external_id)):
        return external_id
    return "sha256:" + hashlib.sha256(external_id.encode("utf-8", "surrogatepass")).hexdigest()


@contextmanager
def _storing(source: ActiveSource, lost: str) -> Iterator[None]:
    """Database errors as answers: a value the database refuses is the payload's fault (422;
    retrying cannot help), anything else is the database's (503; the sender retries)."""
    try:
        yield
    except DataError as exc:
        reason = refusal_reason(exc)
        log.warning("could not store a request for %s: %s", source.key, reason)
        raise Rejected(422, "unstorable_payload",
                       f"a value in this payload cannot be stored ({lost}): {reason}") from exc
    except SQLAlchemyError as exc:
        log.error("could not store a request for %s: %s", source.key, exc)
        raise Unavailable(f"the database is unavailable; {lost}, retry later") from exc


@contextmanager
def _plugin_guard(source: ActiveSource) -> Iterator[None]:
    """A plugin that crashes on a request answers 422, not 500: the sender learns it was refused."""
    try:
        yield
    except Rejected:
        raise
    except Exception as exc:
        log.exception("source plugin %s failed on a request to %s", source.type, source.key)
        raise Rejected(422, "unprocessable_payload",
                       f"the {source.type} plugin could not process this payload ({exc.__class__.__name__})") from exc


MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a vendor's alert time may be; a skewed clock must not pin an incident's times ahead."""


def _complete(source: ActiveSource, alert: Alert, received_at: datetime) -> Alert | Refused:
    """Check what the plugin produced (a ``Refused`` naming each bad field) and add what only the core knows."""
    faults = alert_faults(alert)
    if faults:
        return Refused(faults)
    occurred = alert.occurred_at or received_at
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=timezone.utc)
    occurred = min(occurred, received_at + MAX_CLOCK_SKEW)
    labels, annotations = (_texts(alert.labels), _texts(alert.annotations))
    links = [Link(clean_text(str(link.title or "")) or link.url, clean_text(link.url)) for link in alert.links]
    resource = (alert.resource.id, alert.resource.name, alert.resource.type)
    return alert.replace(
        source_key=source.key, source_type=source.type, occurred_at=occurred, labels=labels, received_at=received_at,
        annotations=annotations, links=links,
        fingerprint=namespaced_fingerprint(source.key, source.plugin.fingerprint(alert), source.plugin.group(alert)),
        title=clean_text(alert.title), description=clean_text(alert.description or ""),
        resource=Resource(*(_storable(text or "", limit) for text, limit in zip(resource, _RESOURCE_LENGTHS))),
        external_id=_storable_id(alert.external_id),
    )


def _texts(mapping: Mapping) -> dict[str, str]:
    """Labels or annotations as storable strings; ``None`` values dropped."""
    return {clean_text(str(k)): clean_text(str(v)) for k, v in mapping.items() if v is not None}


def _raw_values(source: ActiveSource, request: InboundRequest) -> dict:
    """The raw journal's row, as the source's scrub leaves it and without credentials."""
    return dict(_journal_values(source, request, *source.plugin.scrub(request)),
                external_id=_storable_id(source.plugin.delivery_id(request)), alert_count=0)


def _journal_values(source: ActiveSource, request: InboundRequest, headers: Mapping[str, str], body: bytes) -> dict:
    """What the raw journal and the refused requests keep of a request: ``headers`` and ``body``
    as scrubbed, credentials redacted."""
    content_type = request.headers.get("content-type")
    return dict(
        source_key=source.key, source_type=source.type, method=request.method, path=request.path,
        headers={k: ("[redacted]" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()},
        body=body, content_type=content_type and _storable(content_type, _CONTENT_TYPE_LENGTH),
        remote_addr=request.remote_addr, received_at=request.received_at,
    )


def _store_within_limit(tx: CoreTransaction, source: ActiveSource, raw: dict, routed, repeated: set[int],
                        look: bool, own_delivery_id: bool) -> list[Optional[int]]:
    """``store_alerts``, on SQLite after taking the source's token in the same transaction (see ratelimit)."""
    if source.rate_limit is not None and tx.connection.dialect.name == "sqlite":
        _refuse_over_limit(source, ratelimit.take(tx.connection, source.key, source.rate_limit))
    return store_alerts(tx, raw, routed, repeated, look, lock_delivery_id=own_delivery_id)


def _store_handshake(runtime: Runtime, source: ActiveSource, request: InboundRequest, raw: dict,
                     reply: Reply) -> None:
    def work(conn: Connection) -> None:
        # A handshake is answered anew each time, so each one is journaled: no idempotency key.
        raw_id = insert_raw(conn, dict(raw, external_id=None))
        conn.execute(insert(Handshake.__table__).values(
            source_key=source.key, raw_request_id=raw_id, received_at=request.received_at,
            status=reply.status, record=dict(reply.record or {}),
        ))

    with _storing(source, "the handshake was not recorded"):
        run_in_transaction(runtime.engine, work)
