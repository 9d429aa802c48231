"""Contract suites: subclass one in a plugin's tests (as ``TestAcmeContract``) to prove the plugin
honours the contract of docs/plugins.md on its own samples.

Samples are the JSON files of the directory a type names in its ``samples`` attribute
(``gateway.plugins.sample_files``): webhook bodies for a source, alerts for a sink.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Iterator, Optional, Sequence

import pytest
import yaml
from marshmallow import RAISE

from gateway import (
    ALERT_STATUSES, DELIVERY_DEADLINE_SECONDS, SEVERITIES, Alert, Deadline, Delivery, Headers, InboundRequest,
    PermanentError, Refused, Rejected, Resource, RetryableError, SinkType, SourceType,
)
from gateway.config.redaction import secret_fields
from gateway.plugins import sample_files
from gateway.testing import WebhookClient, admin_client

THREADS = 8
RECEIVED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class _Contract:
    samples: ClassVar[Optional[Sequence[str | Path]]] = None
    """Sample files; by default the type's declared ones (its ``samples`` directory)."""

    @classmethod
    def _type(cls) -> type:
        raise NotImplementedError

    @classmethod
    def sample_paths(cls) -> list[Path]:
        return [Path(p) for p in cls.samples] if cls.samples is not None else sample_files(cls._type())

    @classmethod
    def load_samples(cls) -> dict[str, Any]:
        """File name -> decoded JSON, for every sample."""
        return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in cls.sample_paths()}

    @classmethod
    def load_options(cls, raw: dict) -> dict:
        """Options as the core loads them from gateway.yaml: through the schema, unknown keys refused."""
        return cls._type().options_schema(unknown=RAISE).load(raw)

    def test_declares_samples(self):
        assert self.sample_paths(), f"{self._type().__name__} declares no sample (a JSON file in its samples dir)"


class SourceContract(_Contract):
    """The contract of a ``SourceType``, run on each of its samples, directly and through a real gateway."""

    source_type: ClassVar[type[SourceType]]
    options: ClassVar[dict] = {}
    """The source's options, as written in gateway.yaml."""
    headers: ClassVar[dict] = {}
    """Headers of a request that ``verify`` accepts with ``options``."""
    refused_headers: ClassVar[Optional[Sequence[dict]]] = None
    """Header sets ``verify`` must refuse (401 or 403); by default no header at all when a secret option is set."""
    recoveries: ClassVar[Sequence[tuple[str, str]]] = ()
    """(firing sample, its recovery sample): the recovery's alerts are resolved and share the firing's fingerprints."""
    same_problem: ClassVar[Sequence[tuple[str, str]]] = ()
    """Pairs of samples about the same problems (what the fingerprint must ignore differs): same fingerprints."""
    secrets: ClassVar[Sequence[str]] = ()
    """Text of the samples or headers that the raw journal must not keep (secret options are added)."""
    key: ClassVar[str] = "contract"

    @classmethod
    def _type(cls) -> type:
        return cls.source_type

    # -- helpers ------------------------------------------------------------------------

    def source(self) -> SourceType:
        return self.source_type(self.key, self.load_options(self.options))

    def request(self, payload: Any, headers: Optional[dict] = None, received_at: datetime = RECEIVED_AT):
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return InboundRequest("POST", f"/hooks/{self.source_type.name}/{self.key}/",
                              Headers({"Content-Type": "application/json", **(headers or {})}), body,
                              json.loads(body), "127.0.0.1", received_at)

    def parsed(self, source: SourceType, payload: Any, received_at: datetime = RECEIVED_AT) -> list[tuple]:
        """(alert, fingerprint, group) for each alert, or [] for a handshake.  A ``Refused`` item
        (the source refusing one alert of several) has no fingerprint and is left out; a sample
        whose alerts are refused fails ``test_samples_are_accepted_and_stored``."""
        request = self.request(payload, self.headers, received_at)
        if source.handshake(request) is not None:
            return []
        return [(alert, source.fingerprint(alert), source.group(alert)) for alert in source.parse(request)
                if not isinstance(alert, Refused)]

    def refused(self) -> Sequence[dict]:
        if self.refused_headers is not None:
            return self.refused_headers
        return [{}] if self.secret_values() else []

    def secret_values(self) -> list[str]:
        options = self.load_options(self.options)
        marked = [options.get(name) for name in secret_fields(self.source_type.options_schema)]
        return [str(value) for value in (*marked, *self.secrets) if value]

    def gateway_yaml(self) -> str:
        return yaml.safe_dump({"sources": [{"key": self.key, "type": self.source_type.name, **self.options}],
                               "sinks": [{"name": "itms", "type": "itms"}], "route": {"sinks": ["itms"]}})

    def gateway(self, make_app):
        """An app on the test's database serving this source (registered in process when not installed)."""
        from gateway.plugins import build_registry

        installed = build_registry().source_types.get(self.source_type.name) is self.source_type
        app = make_app(self.gateway_yaml(), plugins=() if installed else [_plugin_of(source_types=[self.source_type])])
        return app, WebhookClient(app)

    # -- verify -------------------------------------------------------------------------

    def test_options_load_through_the_schema(self):
        self.load_options(self.options)

    def test_verify_accepts_the_declared_headers(self):
        source = self.source()
        for name, payload in self.load_samples().items():
            source.verify(self.request(payload, self.headers))  # raises: the sample is refused

    def test_verify_refuses_the_declared_headers(self):
        source = self.source()
        for headers, (name, payload) in itertools.product(self.refused(), self.load_samples().items()):
            with pytest.raises(Rejected) as refusal:
                source.verify(self.request(payload, headers))
            assert refusal.value.status in (401, 403), f"{name} with {headers}: {refusal.value.status}"

    # -- parse and fingerprint ------------------------------------------------------------

    def test_parse_gives_valid_alerts(self):
        source = self.source()
        for name, payload in self.load_samples().items():
            for alert, fingerprint, group in self.parsed(source, payload):
                assert isinstance(alert, Alert), f"{name}: parse returned {alert!r}"
                assert alert.status in ALERT_STATUSES, f"{name}: status {alert.status!r}"
                assert alert.severity in SEVERITIES, f"{name}: severity {alert.severity!r}"
                assert isinstance(alert.title, str) and alert.title.strip(), f"{name}: empty title"
                assert isinstance(alert.resource, Resource), f"{name}: resource {alert.resource!r}"
                assert alert.occurred_at is None or isinstance(alert.occurred_at, datetime), name
                assert alert.external_id is None or isinstance(alert.external_id, str), name
                assert all(isinstance(k, str) for k in alert.labels), f"{name}: label names must be strings"
                left = {f: getattr(alert, f) for f in ("source_key", "fingerprint", "raw_request_id", "id") if
                        getattr(alert, f)}
                assert not left, f"{name}: the core sets these, not parse: {left}"
                assert isinstance(fingerprint, str) and fingerprint, f"{name}: fingerprint {fingerprint!r}"
                assert group is None or isinstance(group, str), f"{name}: group {group!r}"

    def test_fingerprint_is_stable(self):
        """The same payload, received later by a new instance, names the same problems."""
        later = datetime(2030, 6, 7, tzinfo=timezone.utc)
        for name, payload in self.load_samples().items():
            first = [(f, g) for _, f, g in self.parsed(self.source(), payload)]
            again = [(f, g) for _, f, g in self.parsed(self.source(), copy.deepcopy(payload), later)]
            assert first == again, name

    def test_a_recovery_shares_its_firing_fingerprint(self):
        """Each firing alert is ended by an alert of its recovery sample: one of the same
        fingerprint, or one speaking for its whole group (``SourceType.group``)."""
        samples, source = self.load_samples(), self.source()
        for firing, recovery in self.recoveries:
            fired, ended = self.parsed(source, samples[firing]), self.parsed(source, samples[recovery])
            assert fired and {a.status for a, _, _ in fired} == {"firing"}, f"{firing} must be firing"
            assert ended and {a.status for a, _, _ in ended} == {"resolved"}, f"{recovery} must be a recovery"
            ending = {fp for _, fp, _ in ended}
            left = [fp for _, fp, group in fired if fp not in ending and group not in ending]
            assert not left, f"{recovery} resolves none of {left} of {firing}"

    def test_the_fingerprint_ignores_what_it_should(self):
        samples, source = self.load_samples(), self.source()
        for first, second in self.same_problem:
            a, b = self.parsed(source, samples[first]), self.parsed(source, samples[second])
            assert a and [fp for _, fp, _ in a] == [fp for _, fp, _ in b], f"{first} and {second}: fingerprints differ"

    # -- bad payloads ---------------------------------------------------------------------

    def test_malformed_payloads_are_refused_not_crashed(self):
        """Every damaged sample is parsed or refused with ``Rejected`` naming what is wrong; a crash
        would still be a 422 for the sender, but one that says nothing."""
        source = self.source()
        for what, payload in malformed(self.load_samples()):
            try:
                self.parsed(source, payload)
            except Rejected as refusal:
                assert 400 <= refusal.status < 500, f"{what}: {refusal.status}"
            except Exception as exc:  # noqa: BLE001  (the failure this test reports)
                pytest.fail(f"{what}: {self.source_type.__name__} crashed with {exc!r} instead of raising Rejected")

    # -- through a gateway ----------------------------------------------------------------

    def test_samples_are_accepted_and_stored(self, make_app):
        app, hooks = self.gateway(make_app)
        source = self.source()
        for name, payload in self.load_samples().items():
            response = hooks.post(self.source_type.name, self.key, payload, headers=self.headers)
            assert response.status_code < 300, f"{name}: {response.status_code} {response.get_json()}"
            expected, body = self.parsed(source, payload), response.get_json()
            if expected and body.get("status") != "duplicate":  # samples may share an idempotency key
                assert response.status_code == 202, f"{name}: {body}"
                assert len(body["alerts"]) == len(expected) and not body.get("refused"), f"{name}: {body}"
        for headers in self.refused():
            response = hooks.post(self.source_type.name, self.key, next(iter(self.load_samples().values())),
                                  headers=headers)
            assert response.status_code in (401, 403) and response.get_json()["error"]["code"], response.get_json()

    def test_scrub_keeps_secrets_out_of_the_raw_journal(self, make_app):
        secrets = self.secret_values()
        if not secrets:
            pytest.skip("no secret option set and no secrets declared")
        app, hooks = self.gateway(make_app)
        for payload in self.load_samples().values():
            hooks.post(self.source_type.name, self.key, payload, headers=self.headers)
        api = admin_client(app)
        events = api.get("/api/events", query_string={"source": self.key, "per_page": 500}).get_json()["items"]
        assert events, "nothing was stored"
        for event in events:
            kept = json.dumps(event["headers"], ensure_ascii=False) + api.get(event["raw_url"]).get_data(as_text=True)
            leaked = [s for s in secrets if s in kept]
            assert not leaked, f"the raw journal keeps {leaked} (event {event['id']}): scrub them"

    def test_plugin_errors_are_422_not_500(self, make_app):
        app, hooks = self.gateway(make_app)
        for what, payload in itertools.islice(malformed(self.load_samples()), 40):
            response = hooks.post(self.source_type.name, self.key, payload, headers=self.headers)
            assert response.status_code < 500, f"{what}: {response.status_code} {response.get_data(as_text=True)}"
            if response.status_code >= 400:
                assert response.get_json()["error"]["code"], what

    # -- threads --------------------------------------------------------------------------

    def test_one_instance_serves_concurrent_requests(self):
        """One instance serves every request of its source, from several threads at once."""
        source, samples = self.source(), list(self.load_samples().values())
        expected = [self.parsed(self.source(), payload) for payload in samples]
        with ThreadPoolExecutor(THREADS) as pool:
            rounds = list(pool.map(lambda _: [self.parsed(source, p) for p in samples], range(THREADS * 2)))
        for result in rounds:
            assert result == expected

    def test_concurrent_webhooks_are_each_answered_once(self, make_app):
        app, hooks = self.gateway(make_app)
        samples = list(self.load_samples().values())
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(lambda p: hooks.post(self.source_type.name, self.key, p, headers=self.headers),
                                    samples * THREADS))
        assert all(a.status_code < 300 for a in answers), [a.get_json() for a in answers if a.status_code >= 300]
        kept = sum(a.get_json().get("status") != "duplicate" for a in answers)
        stored = admin_client(app).get("/api/events", query_string={"source": self.key}).get_json()["total"]
        assert stored == kept, f"{stored} requests stored, {kept} answered as kept"


class SinkContract(_Contract):
    """The contract of an outbox ``SinkType``, delivering each sample alert to a real receiver on 127.0.0.1."""

    sink_type: ClassVar[type[SinkType]]
    retryable_statuses: ClassVar[Sequence[int]] = (429, 500, 502, 503, 504)
    """Answers ``deliver`` must raise ``RetryableError`` for."""
    permanent_statuses: ClassVar[Sequence[int]] = (400, 401, 403, 404, 422)
    """Answers ``deliver`` must raise ``PermanentError`` for."""
    name: ClassVar[str] = "contract"

    @classmethod
    def _type(cls) -> type:
        return cls.sink_type

    def options(self, url: str) -> dict:
        """The sink's options in gateway.yaml, sending to ``url`` (the receiver); override it."""
        return {"url": url}

    def sink(self, receiver) -> SinkType:
        return self.sink_type(self.name, self.load_options(self.options(receiver.url)))

    def deliveries(self) -> Iterator[Delivery]:
        """Each sample as a firing and as its recovery, as the outbox hands them over."""
        ids = itertools.count(1)
        for name, data in self.load_samples().items():
            alert = sample_alert(data)
            for status in ALERT_STATUSES:
                yield Delivery(next(ids), 1, self.name, alert.replace(status=status, id=next(ids)),
                               Deadline(DELIVERY_DEADLINE_SECONDS),
                               period=1 if self.sink_type.tracks_problems else None)

    def test_options_load_through_the_schema(self):
        self.load_options(self.options("http://127.0.0.1:9/"))

    def test_samples_are_delivered(self, receiver):
        sink, deliveries = self.sink(receiver), list(self.deliveries())
        try:
            for delivery in deliveries:
                sink.deliver(delivery)
        finally:
            sink.close()
        assert len(receiver.requests) >= len(deliveries)

    def test_answers_map_to_retryable_and_permanent_errors(self, receiver):
        sink, delivery = self.sink(receiver), next(self.deliveries())
        expected = [(s, RetryableError) for s in self.retryable_statuses] + [
            (s, PermanentError) for s in self.permanent_statuses]
        try:
            for status, error in expected:
                receiver.default = (status, {}, '{"error": "scripted"}')
                with pytest.raises(error, match=".") as raised:
                    sink.deliver(delivery)
                assert raised.type is error, f"{status}: {raised.type.__name__}, declared {error.__name__}"
            receiver.down()
            with pytest.raises(RetryableError):
                sink.deliver(delivery)
        finally:
            sink.close()

    def test_accepts_answers_for_every_sample(self, receiver):
        sink = self.sink(receiver)
        for delivery in self.deliveries():
            assert isinstance(sink.accepts(delivery.alert), bool)
        sink.close()

    def test_one_instance_delivers_from_several_threads(self, receiver):
        sink, deliveries = self.sink(receiver), list(self.deliveries())
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(sink.deliver, deliveries * THREADS))
        sink.close()
        assert len(receiver.requests) >= len(deliveries) * THREADS


def sample_alert(data: dict) -> Alert:
    """An ``Alert`` from a sink sample (its fields as JSON), with what the core sets filled in."""
    fields = dict(data)
    resource = Resource(**fields.pop("resource", {}))
    occurred = fields.pop("occurred_at", None)
    fingerprint = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return Alert(**fields, resource=resource, source_key="sample", source_type="sample", fingerprint=fingerprint,
                 occurred_at=datetime.fromisoformat(occurred) if occurred else RECEIVED_AT, received_at=RECEIVED_AT,
                 raw_request_id=1, id=1)


def malformed(samples: dict[str, Any], per_sample: int = 60) -> Iterator[tuple[str, Any]]:
    """(what was damaged, payload): other JSON documents, then each sample with a value removed,
    nulled or of another type, most shallow first."""
    for other in ({}, [], "text", None, 0, True):
        yield f"the payload {json.dumps(other)}", other
    for name, payload in samples.items():
        for path in itertools.islice(_paths(payload), per_sample):
            for how in ("removed", "null", "retyped"):
                damaged = copy.deepcopy(payload)
                *parents, last = path
                holder = damaged
                for step in parents:
                    holder = holder[step]
                if how == "removed":
                    del holder[last]
                else:
                    holder[last] = None if how == "null" else _other_type(holder[last])
                yield f"{name} with {'/'.join(map(str, path))} {how}", damaged


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key and index path of a JSON document, breadth first."""
    level = [(prefix, value)]
    while level:
        children = []
        for path, node in level:
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for key, child in items:
                yield (*path, key)
                children.append(((*path, key), child))
        level = children


def _other_type(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return {"unexpected": value}
    if isinstance(value, (int, float)):
        return "not a number"
    if isinstance(value, str):
        return [value]
    return 12345 if isinstance(value, (dict, list)) else None


def _plugin_of(source_types=(), sink_types=()):
    """A plugin registering these types, for a type tested before its distribution is installed."""
    from types import ModuleType

    from gateway import hookimpl

    @hookimpl
    def register_source_types(register):
        for cls in source_types:
            register(cls)

    @hookimpl
    def register_sink_types(register):
        for cls in sink_types:
            register(cls)

    plugin = ModuleType(f"contract_{'_'.join(c.name for c in (*source_types, *sink_types))}")
    plugin.register_source_types, plugin.register_sink_types = register_source_types, register_sink_types
    return plugin
