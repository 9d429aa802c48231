"""deliveries.blocked; the claim walks unblocked pending rows by when they are due

The claim walked a sink's pending rows in id order and kept each one that was its ordering
key's earliest pending row.  Behind an outage that is most of the backlog: at 100,000 pending
rows over 1,000 problems, with each problem's first row waiting out its backoff, one claim read
every row to find nothing, 852 ms on PostgreSQL and 182 ms on SQLite.  Rows known to wait
behind an earlier row of their key are now marked ``blocked`` (the dispatcher marks them, and
the row they wait for unblocks the next when it is done), and the claim walks only unblocked
pending rows, due ones first, so its cost no longer grows with the backlog.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 20:45:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")
CLAIMABLE = sa.text("status = 'pending' AND blocked = false")


def upgrade() -> None:
    # No batch_alter_table: on SQLite it would copy the table, and ADD COLUMN with a default need not.
    op.add_column('deliveries', sa.Column('blocked', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.drop_index('ix_deliveries_pending_sink_name_id', table_name='deliveries')
    op.create_index('ix_deliveries_claimable_sink_name_next_attempt_at_id', 'deliveries',
                    ['sink_name', 'next_attempt_at', 'id'], unique=False,
                    sqlite_where=CLAIMABLE, postgresql_where=CLAIMABLE)


def downgrade() -> None:
    op.drop_index('ix_deliveries_claimable_sink_name_next_attempt_at_id', table_name='deliveries')
    op.create_index('ix_deliveries_pending_sink_name_id', 'deliveries', ['sink_name', 'id'], unique=False,
                    sqlite_where=PENDING, postgresql_where=PENDING)
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('blocked')
