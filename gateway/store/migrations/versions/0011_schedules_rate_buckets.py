"""schedules, rate_buckets: the scheduled purge and per-source rate limits across processes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 13:10:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('schedules',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_schedules'))
    )
    op.create_table('rate_buckets',
    sa.Column('source_key', sa.String(length=64), nullable=False),
    sa.Column('tokens', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.Column('allowed', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('source_key', name=op.f('pk_rate_buckets'))
    )


def downgrade() -> None:
    op.drop_table('rate_buckets')
    op.drop_table('schedules')
