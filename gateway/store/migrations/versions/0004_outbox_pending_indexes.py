"""deliveries: partial indexes of pending rows for the claim; requeued_at for retries by age

On PostgreSQL the claim took over a second at 4,000 pending rows until ANALYZE had run:
without statistics the planner checked each candidate's earlier rows by scanning every
pending row of the sink.  The claim now looks up the earliest pending row per ordering key
in a partial index that holds only the backlog.  ``requeued_at`` restarts a re-driven
row's ``max_age``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 12:30:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requeued_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index('ix_deliveries_sink_name_status_next_attempt_at')
        batch_op.create_index('ix_deliveries_pending_sink_name_id', ['sink_name', 'id'], unique=False,
                              sqlite_where=PENDING, postgresql_where=PENDING)
        batch_op.create_index('ix_deliveries_pending_sink_name_ordering_key_id', ['sink_name', 'ordering_key', 'id'],
                              unique=False, sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_pending_sink_name_ordering_key_id')
        batch_op.drop_index('ix_deliveries_pending_sink_name_id')
        batch_op.create_index('ix_deliveries_sink_name_status_next_attempt_at',
                              ['sink_name', 'status', 'next_attempt_at'], unique=False)
        batch_op.drop_column('requeued_at')
