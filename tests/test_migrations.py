"""The migrations build exactly the schema the models describe, on both databases (on PostgreSQL
the raw journal's partitions aside: the models know only their parent)."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, text

from gateway.store import partitions
from gateway.store.db import make_engine
from gateway.store.models import TRIGRAM_INDEXES, Base, is_search_table

EXPRESSION_INDEXES = {index.name for table in Base.metadata.tables.values() for index in table.indexes
                      if not all(isinstance(part, Column) for part in index.expressions)}
"""Indexes on an expression: autogenerate cannot compare them (SQLite's are not reflected, and
PostgreSQL's come back in its own spelling), so they are checked by name here and by use in
tests/test_query_plans.py, where each must serve its query."""


def test_upgraded_database_matches_the_models(database_url):
    engine = make_engine(database_url)  # the fixture's database went through `gateway db upgrade`
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "include_name": _in_the_models,  # reflected names; include_object sees both sides' objects
                "include_object": lambda obj, name, type_, *_: not (type_ == "index" and name in EXPRESSION_INDEXES)})
            differences = compare_metadata(context, Base.metadata)
            catalog = ("SELECT indexname FROM pg_indexes" if conn.dialect.name == "postgresql"
                       else "SELECT name FROM sqlite_master WHERE type = 'index'")
            indexes = set(conn.execute(text(catalog)).scalars())
    finally:
        engine.dispose()
    assert differences == []
    assert EXPRESSION_INDEXES and EXPRESSION_INDEXES <= indexes


def _in_the_models(name, type_, parent_names) -> bool:
    """Not the search's indexes, the migrations' alone (see ``TRIGRAM_INDEXES`` on PostgreSQL and
    ``SEARCH_TABLES`` on SQLite), nor a partition of the raw journal."""
    if type_ == "table":
        return not (partitions.is_partition(name) or is_search_table(name))
    return not (type_ == "index" and name in TRIGRAM_INDEXES)
