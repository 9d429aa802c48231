"""incidents: indexes for the list's default sort, its filters and its search at a million rows;
deliveries by alert, for an incident's page

Without them the list sorted every incident for each page and counted a filter by reading
the table (tests/test_query_plans.py EXPLAINs every list, detail, deliveries and claim query).
last_event_at comes back (migration 0002 dropped it to spare repeats an index write): a
list that sorts all incidents per page misses its target long before a year of them.

On PostgreSQL the search (ILIKE '%text%' on title, description, resource name and comments)
gets pg_trgm GIN indexes.  pg_trgm is a trusted extension (PostgreSQL 13+): a database owner
may create it (in schema public); where it cannot be, the search reads the table as before and the
upgrade goes on without these indexes (gateway.store.models.TRIGRAM_INDEXES).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 13:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

TRIGRAM_INDEXES = {
    'ix_incidents_title_trgm': ('incidents', 'title'),
    'ix_incidents_description_trgm': ('incidents', 'description'),
    'ix_incidents_resource_name_trgm': ('incidents', 'resource_name'),
    'ix_timeline_entries_note_trgm': ('timeline_entries', 'note'),
}


def upgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.create_index('ix_incidents_severity', ['severity'], unique=False)
        batch_op.create_index('ix_incidents_source_key', ['source_key'], unique=False)
        batch_op.create_index('ix_incidents_last_event_at_id', ['last_event_at', 'id'], unique=False)
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_alert_id', ['alert_id'], unique=False)
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return
    try:
        with bind.begin_nested():
            # In public, not the first schema on the search path: a schema dropped with CASCADE
            # (as each test run drops its own) would take the extension, and every index on it, along.
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    except sa.exc.DBAPIError:
        return  # no right to create it: the search scans, as it did before
    # Where the extension lives (another schema may hold it): its operator class is named there.
    schema = bind.execute(sa.text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n"
                                  " ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'")).scalar_one()
    for name, (table, column) in TRIGRAM_INDEXES.items():
        op.create_index(name, table, [column], postgresql_using='gin',
                        postgresql_ops={column: f'"{schema}".gin_trgm_ops'})


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_alert_id')
    for name, (table, _) in TRIGRAM_INDEXES.items():
        op.execute(f'DROP INDEX IF EXISTS "{name}"')
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_last_event_at_id')
        batch_op.drop_index('ix_incidents_source_key')
        batch_op.drop_index('ix_incidents_severity')
