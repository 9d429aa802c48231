"""raw_requests: a source's requests walked newest first, a delivery id found across every source

A source's requests (``/api/sources/<key>/requests``, its console page, the sources page's last
24 hours) are listed by when they were received, but the index held (source, id): every list read
the source's whole journal and sorted it.  At a year's ten million requests over 50 sources, the
list took 340 ms on SQLite and 1.8 s on PostgreSQL, and the sources page 161 ms and 5.2 s.  The index
becomes (source, received_at, id), the order every journal list now shows.

``/api/events?external_id=`` names no source, and the guard's index led with the source:
PostgreSQL, which cannot skip through a leading column, read every day partition whole (6.7 s).
The index leads with the delivery id instead, and holds all three of ingest's duplicate check
(source, delivery id, received since): with the received time left out, SQLite (no statistics on a
new database) checked each webhook along (source, received_at), reading the source's whole day, and
ingest ran at 59 % of its rate (bench/HISTORY.md, "Session 22").

Both replace an index, so ingest keeps its index count.  Each is built over the whole journal,
and the table takes no write meanwhile: for ten million requests, 31 s on PostgreSQL and 30 s on
SQLite here (bench/HISTORY.md, "Session 22").

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 15:40:00
"""
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

REPLACED = (('ix_raw_requests_source_key_id', ['source_key', 'id'],
             'ix_raw_requests_source_key_received_at_id', ['source_key', 'received_at', 'id']),
            ('ix_raw_requests_source_key_external_id', ['source_key', 'external_id'],
             'ix_raw_requests_external_id_source_key_received_at', ['external_id', 'source_key', 'received_at']))


def upgrade() -> None:
    for old, _, new, columns in REPLACED:
        op.drop_index(old, table_name='raw_requests')
        op.create_index(new, 'raw_requests', columns)


def downgrade() -> None:
    for old, columns, new, _ in REPLACED:
        op.drop_index(new, table_name='raw_requests')
        op.create_index(old, 'raw_requests', columns)
