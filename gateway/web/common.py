"""What every API endpoint shares: JSON bodies, checked strings, timestamps, filters, pagination
and the database."""
from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any, Callable, ContextManager, Mapping, Optional, TypeVar

from flask import current_app, request
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import Connection, Select, Table, select
from werkzeug.routing import BaseConverter, IntegerConverter

from gateway.bodies import MAY_HOLD_UNSTORABLE, parse_json, strings
from gateway.config import NAME
from gateway.contracts import ApiError, Transaction
from gateway.pipeline.transaction import in_transaction
from gateway.store import db, partitions
from gateway.store.lists import count_up_to, one_of
from gateway.store.models import UNSTORABLE_TEXT

T = TypeVar("T")


def read_body(limit: int) -> bytes:
    """The request body, refused (413 ``body_too_large``) past ``limit`` bytes, declared or sent."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"body is {request.content_length} bytes; the limit is {limit}")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise ApiError(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
    return body


MAX_API_BODY = 256 * 1024
"""The largest /api request body: far above any real one (a source with its options, a note)."""


def json_object(schema: Optional[Schema] = None) -> dict:
    """The request body as a JSON object (an empty body is ``{}``), loaded through ``schema``;
    one over MAX_API_BODY is refused (413).

    Parsed whatever the content type (curl -d sends a form one).  A body holding an unpaired
    surrogate is refused whole: it is no text, so it could be neither stored nor echoed in an
    error, not even as an unknown field's name.  (NUL is text: ``Text`` fields refuse it by name.)
    """
    body = read_body(MAX_API_BODY)
    data = parse_json(body) if body.strip() else None
    if data is not None and not isinstance(data, dict):
        raise ValidationError({"_schema": ["the body must be a JSON object"]})
    if data and MAY_HOLD_UNSTORABLE.search(body) and any(_SURROGATE.search(text) for text in strings(data)):
        raise ApiError(400, "invalid_json",
                       "body holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is no text")
    return schema.load(data or {}) if schema is not None else (data or {})


_SURROGATE = re.compile("[\ud800-\udfff]")


class RowIdConverter(IntegerConverter):
    """``<id:...>`` in a route: a row id from 1 to 2**31 - 1, what an INTEGER key holds on
    PostgreSQL.  A larger one is a 404 here, not an overflow in SQLite's driver or a value
    PostgreSQL refuses."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=2**31 - 1)


class SourceKeyConverter(BaseConverter):
    """``<source_key:...>`` in a route: what a source key can be.  Any other text, a NUL
    above all (PostgreSQL cannot even compare it), is a 404 here, before any query."""

    regex = NAME


class Text(fields.String):
    """A string the database can store and compare: refused here, alike on every database, if not.

    PostgreSQL refuses NUL (0x00) in text, even in a WHERE comparison, and a string longer than
    its varchar column, where SQLite takes both: unchecked, a request SQLite answers 2xx was a
    500 on PostgreSQL.  ``column`` (a model attribute) makes its length the maximum.
    """

    default_error_messages = {"unstorable": "must not contain NUL (\\u0000) or an unpaired surrogate"}

    def __init__(self, *, column=None, **kwargs):
        super().__init__(**kwargs)
        if column is not None:
            self.validators.append(validate.Length(max=column.type.length))

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if UNSTORABLE_TEXT.search(text):
            raise self.make_error("unstorable")
        return text


def iso(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None


def where_given(query: Select, args: Mapping[str, Any], columns: Mapping[str, Any]) -> Select:
    """Add ``column == args[name]`` for every filter the request gave."""
    for name, column in columns.items():
        if name in args:
            query = query.where(column == args[name])
    return query


class Page(Schema):
    """``?page=&per_page=`` for every list endpoint: ``{"items": [...], "total": N, "page": P}``."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


@functools.cache
def page_of(item: type[Schema]) -> type[Schema]:
    """The schema of what ``paginate`` answers, for ``documented``: a page of ``item``."""
    return Schema.from_dict({"items": fields.List(fields.Nested(item), required=True),
                             "total": fields.Integer(required=True, allow_none=True,
                                                     metadata={"description": f"the matches, counted up to {COUNT_CAP:,}: null past that, and on a page by cursor"}),
                             "page": fields.Integer(required=True),
                             "per_page": fields.Integer(required=True)}, name=f"{item.__name__}Page")


def reading() -> ContextManager[Connection]:
    """A connection for reads, to use as ``with reading() as conn:``; writes go through ``transaction``.
    It commits at the end rather than rolling back (``gateway.store.db.reading`` says why)."""
    return db.reading(current_app.extensions["gateway"].engine)


def transaction(work: Callable[[Transaction], T]) -> T:
    """Run ``work(tx)`` in one database transaction and return what it returns.

    It is run again, whole, on a fresh transaction when it loses a race, so it must be safe
    to repeat.  Alerts it hands the pipeline (``tx.submit``) are delivered once it commits.
    """
    return in_transaction(current_app.extensions["gateway"].runtime, work)


COUNT_CAP = 10_000
"""Counts stop past this many matches: a count reads every match it counts, and at a million
incidents counting them all cost more than the page (issue 16's 50 ms)."""


def capped_count(conn: Connection, query: Select) -> Optional[int]:
    """How many rows ``query`` selects, or None when that is more than ``COUNT_CAP`` (not counted further)."""
    found = count_up_to(conn, query, COUNT_CAP + 1)
    return found if found <= COUNT_CAP else None


def counted_page(conn: Connection, query: Select, key, *, limit: int, offset: int,
                 rows_from: Optional[Table] = None) -> tuple[list, Optional[int]]:
    """``limit`` rows of the ordered ``query`` from ``offset`` and ``capped_count``'s total, from ONE
    read of the matches: their ``key`` (a unique column) in order, up to ``COUNT_CAP`` + 1, then the
    page's rows by key, from ``rows_from`` when ``query`` selects from a subquery of that table's
    rows (its key column of the same name), else with ``query``'s columns.  For a query whose
    matches cost more to find than to fetch (a text search through the trigram indexes), a page's
    read and a count would each find them all again."""
    keys = conn.execute(query.with_only_columns(key).limit(COUNT_CAP + 1)).scalars().all()
    total = len(keys) if len(keys) <= COUNT_CAP else None
    if offset + limit > len(keys) and total is None:  # a page past the cap: read as any page is
        return conn.execute(query.limit(limit).offset(offset)).all(), None
    page = keys[offset:offset + limit]
    by_key = select(*query.selected_columns).where(one_of(key, "page")) if rows_from is None else \
        select(rows_from).where(one_of(rows_from.c[key.key], "page"))
    rows = {getattr(row, key.key): row for row in conn.execute(by_key, {"page": page})}
    return [rows[k] for k in page], total


def paginate(query: Select, args: dict, to_json: Callable, *, count: bool = True) -> dict:
    """One page of ``query``; ``total`` counts the matches up to ``COUNT_CAP`` (null past it, or
    when ``count`` is False): a count reads every match, and on a table of millions that costs
    more than the page."""
    with reading() as conn:
        return _page(conn, query, args, to_json, (lambda: capped_count(conn, query)) if count else None)


def paginate_journal(read: Callable[[Optional[datetime]], Select], args: dict, to_json: Callable,
                     counted: Optional[Callable[[Optional[datetime]], Select]] = None, *, recent: bool = True) -> dict:
    """``paginate`` for the raw journal newest first: ``read(since)`` reads the requests received since
    ``since`` (None: all), ``counted(since)`` those ``total`` counts when ``read`` holds only a page's
    (both in the journal's order).  Read over the shortest recent span that holds the page and more
    than ``COUNT_CAP``, when one does (``partitions.recent_since``; its total is then past the cap):
    a read of every day partition costs PostgreSQL more than the page.  ``recent=False`` skips the
    spans, for a filter no span would hold a page of (a delivery id).  A read of every day is
    planned once per connection (``partitions.planned_once``)."""
    counted = counted or read
    with reading() as conn:
        since = (partitions.recent_since(conn, counted, max(args["page"] * args["per_page"], COUNT_CAP + 1))
                 if recent else None)
        if since is not None:
            return _page(conn, read(since), args, to_json, None)
        with partitions.planned_once(conn):
            return _page(conn, read(None), args, to_json, lambda: capped_count(conn, counted(None)))


def _page(conn: Connection, query: Select, args: dict, to_json: Callable,
          count: Optional[Callable[[], Optional[int]]]) -> dict:
    """The page, and its ``total`` from ``count`` (None: not counted).  A page that holds rows but
    fewer than asked, or the first page empty, is the list's end: the total is known without the
    count's read (one statement fewer; on PostgreSQL's journal, one plan of every day fewer)."""
    offset = (args["page"] - 1) * args["per_page"]
    rows = conn.execute(query.limit(args["per_page"]).offset(offset)).all()
    if count is None:
        total = None
    elif len(rows) < args["per_page"] and (rows or not offset):
        total = offset + len(rows) if offset + len(rows) <= COUNT_CAP else None
    else:
        total = count()
    return {"items": [to_json(row) for row in rows], "total": total, "page": args["page"], "per_page": args["per_page"]}
