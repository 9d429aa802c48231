"""raw_requests partitioned by day on PostgreSQL, so retention drops partitions instead of deleting rows

On PostgreSQL the table becomes a RANGE partition by ``received_at`` (gateway/store/partitions.py
says why daily, and what else was left whole): a partition for every day that has rows, for today
and ``AHEAD`` days on, and a DEFAULT one; the rows are moved in.  Its primary key becomes (id,
received_at), as PostgreSQL requires of a partitioned table, and the id sequence carries over.

On both databases, so the schema is one: (source_key, external_id) is a plain index, not a unique
one (no unique index can span partitions; ingest serializes a delivery id instead), and alerts
and handshakes lose their foreign key to raw_requests (none can point into a partitioned table;
retention made it moot: a purged request was already gone from under its alerts).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 15:00:00
"""
from alembic import op
import sqlalchemy as sa

from gateway.store import partitions

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

FOREIGN_KEYS = {'alerts': 'fk_alerts_raw_request_id_raw_requests',
                'handshakes': 'fk_handshakes_raw_request_id_raw_requests'}
INDEXES = (('ix_raw_requests_source_key_id', ['source_key', 'id']),
           ('ix_raw_requests_received_at', ['received_at']),
           ('ix_raw_requests_source_key_external_id', ['source_key', 'external_id']))


def upgrade() -> None:
    for table, name in FOREIGN_KEYS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(name, type_='foreignkey')
    if op.get_bind().dialect.name != 'postgresql':
        with op.batch_alter_table('raw_requests') as batch_op:
            batch_op.drop_index('uq_raw_requests_source_key_external_id')
            batch_op.create_index('ix_raw_requests_source_key_external_id', ['source_key', 'external_id'])
        return
    conn = op.get_bind()
    op.execute('ALTER TABLE raw_requests RENAME TO raw_requests_unpartitioned')
    op.execute('ALTER TABLE raw_requests_unpartitioned DROP CONSTRAINT pk_raw_requests')
    for name in ('uq_raw_requests_source_key_external_id', 'ix_raw_requests_source_key_id',
                 'ix_raw_requests_received_at'):
        op.drop_index(name, table_name='raw_requests_unpartitioned')
    op.execute('ALTER SEQUENCE raw_requests_id_seq OWNED BY NONE')  # else it goes with the old table
    op.execute('CREATE TABLE raw_requests (LIKE raw_requests_unpartitioned INCLUDING DEFAULTS)'
               ' PARTITION BY RANGE (received_at)')
    op.execute('ALTER SEQUENCE raw_requests_id_seq OWNED BY raw_requests.id')
    op.create_primary_key('pk_raw_requests', 'raw_requests', ['id', 'received_at'])
    for name, columns in INDEXES:
        op.create_index(name, 'raw_requests', columns)
    op.execute(f'CREATE TABLE {partitions.DEFAULT} PARTITION OF raw_requests DEFAULT')
    days = conn.execute(sa.text(
        "SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date FROM raw_requests_unpartitioned"
        " UNION SELECT (now() AT TIME ZONE 'UTC')::date + n FROM generate_series(0, :ahead) AS n ORDER BY 1"),
        {"ahead": partitions.AHEAD}).scalars().all()
    for day in days:
        partitions.create(conn, day)
    op.execute('INSERT INTO raw_requests SELECT * FROM raw_requests_unpartitioned')
    op.execute('DROP TABLE raw_requests_unpartitioned')


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == 'postgresql':
        op.execute('ALTER TABLE raw_requests RENAME TO raw_requests_partitioned')
        op.execute('ALTER TABLE raw_requests_partitioned DROP CONSTRAINT pk_raw_requests')
        for name, _ in INDEXES:
            op.drop_index(name, table_name='raw_requests_partitioned')
        op.execute('ALTER SEQUENCE raw_requests_id_seq OWNED BY NONE')
        op.execute('CREATE TABLE raw_requests (LIKE raw_requests_partitioned INCLUDING DEFAULTS)')
        op.execute('ALTER SEQUENCE raw_requests_id_seq OWNED BY raw_requests.id')
        op.execute('INSERT INTO raw_requests SELECT * FROM raw_requests_partitioned')
        op.execute('DROP TABLE raw_requests_partitioned CASCADE')
        op.create_primary_key('pk_raw_requests', 'raw_requests', ['id'])
        for name, columns in INDEXES[:2]:
            op.create_index(name, 'raw_requests', columns)
        op.create_index('uq_raw_requests_source_key_external_id', 'raw_requests', ['source_key', 'external_id'],
                        unique=True)
    else:
        with op.batch_alter_table('raw_requests') as batch_op:
            batch_op.drop_index('ix_raw_requests_source_key_external_id')
            batch_op.create_index('uq_raw_requests_source_key_external_id', ['source_key', 'external_id'],
                                  unique=True)
    for table, name in FOREIGN_KEYS.items():  # ids of purged requests: the SET NULL the key did
        op.execute(f'UPDATE {table} SET raw_request_id = NULL WHERE raw_request_id NOT IN (SELECT id FROM raw_requests)')
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_foreign_key(name, 'raw_requests', ['raw_request_id'], ['id'], ondelete='SET NULL')
