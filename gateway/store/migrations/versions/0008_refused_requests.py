"""refused_requests: webhooks refused with a 4xx, kept per source for operators and replay

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-05 13:10:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('refused_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_key', sa.String(length=64), nullable=False),
    sa.Column('source_type', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=True),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('verified', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refused_requests'))
    )
    op.create_index('ix_refused_requests_source_key_id', 'refused_requests', ['source_key', 'id'], unique=False)
    op.create_index('ix_refused_requests_received_at', 'refused_requests', ['received_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_refused_requests_received_at', table_name='refused_requests')
    op.drop_index('ix_refused_requests_source_key_id', table_name='refused_requests')
    op.drop_table('refused_requests')
