"""incidents: the source filter's index carries the list's default sort (last_event_at, id)

At a million incidents SQLite answered ``/api/incidents?source=x`` by reading all of that
source's incidents through the old one-column index and sorting them (185 ms at 20,000 per
source; bench/scale.py).  With the sort in the index the page is its first 50 entries, and the
filter's count is still a range of it.  It replaces the one-column index: the same number of
indexes to write.  A repeat moves last_event_at, so on SQLite each repeat now rewrites an entry
of this index too (PostgreSQL rewrote every index entry of a moved row already).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 15:05:00
"""
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_source_key')
        batch_op.create_index('ix_incidents_source_key_last_event_at_id', ['source_key', 'last_event_at', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_source_key_last_event_at_id')
        batch_op.create_index('ix_incidents_source_key', ['source_key'], unique=False)
