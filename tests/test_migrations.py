"""The migrations build exactly the schema the models describe, on both databases."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.store.db import make_engine
from gateway.store.models import Base


def test_upgraded_database_matches_the_models(database_url):
    engine = make_engine(database_url)  # the fixture's database went through `gateway db upgrade`
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
