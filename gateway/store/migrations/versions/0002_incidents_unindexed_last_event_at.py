"""incidents: no index on last_event_at, so a repeat's update touches no index

Every repeat of an open incident moves its last_event_at.  With that column in two
indexes, each repeat rewrote four index entries (and on PostgreSQL ruled out heap-only
updates); the incident list, the only reader, is a human-paced query over one row per
incident, served by an index on status and a sort.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:10:00
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_status_last_event_at')
        batch_op.drop_index('ix_incidents_last_event_at')
        batch_op.create_index('ix_incidents_status', ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_status')
        batch_op.create_index('ix_incidents_last_event_at', ['last_event_at'], unique=False)
        batch_op.create_index('ix_incidents_status_last_event_at', ['status', 'last_event_at'], unique=False)
