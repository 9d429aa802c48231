"""The migrations build exactly the schema the models describe, on both databases."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.store.db import make_engine
from gateway.store.models import TRIGRAM_INDEXES, Base


def test_upgraded_database_matches_the_models(database_url):
    engine = make_engine(database_url)  # the fixture's database went through `gateway db upgrade`
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": _not_a_trigram_index})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def _not_a_trigram_index(name, type_, parent_names) -> bool:
    """The search's PostgreSQL-only indexes are the migration's alone (see ``TRIGRAM_INDEXES``)."""
    return not (type_ == "index" and name in TRIGRAM_INDEXES)
