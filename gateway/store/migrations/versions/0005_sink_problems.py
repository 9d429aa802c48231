"""sink_problems, problem_deliveries: problem periods for sinks that track them

A sink that tracks problems (the SpaceONE forwarder) gets each firing and recovery
tagged with the problem's open period, and refreshes queued while a period is open.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 12:15:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sink_problems',
    sa.Column('sink_name', sa.String(length=64), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('period', sa.Integer(), nullable=False),
    sa.Column('open', sa.Boolean(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('sink_name', 'fingerprint', name=op.f('pk_sink_problems'))
    )
    op.create_table('problem_deliveries',
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('period', sa.Integer(), nullable=False),
    sa.Column('refresh', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'],
                            name=op.f('fk_problem_deliveries_delivery_id_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('delivery_id', name=op.f('pk_problem_deliveries'))
    )


def downgrade() -> None:
    op.drop_table('problem_deliveries')
    op.drop_table('sink_problems')
