"""The migrations build exactly the schema the models describe, on both databases (on PostgreSQL
the raw journal's partitions aside: the models know only their parent)."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.store import partitions
from gateway.store.db import make_engine
from gateway.store.models import TRIGRAM_INDEXES, Base, is_search_table


def test_upgraded_database_matches_the_models(database_url):
    engine = make_engine(database_url)  # the fixture's database went through `gateway db upgrade`
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": _in_the_models})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def _in_the_models(name, type_, parent_names) -> bool:
    """Not the search's indexes, the migrations' alone (see ``TRIGRAM_INDEXES`` on PostgreSQL and
    ``SEARCH_TABLES`` on SQLite), nor a partition of the raw journal."""
    if type_ == "table":
        return not (partitions.is_partition(name) or is_search_table(name))
    return not (type_ == "index" and name in TRIGRAM_INDEXES)
