"""timeline_entries: no raw_request_id; an entry takes its raw request from its alert

The incident store now runs before the raw request is stored (the raw insert is the
duplicate check, and on PostgreSQL it goes in one statement with the first alert), so an
entry cannot know the raw request's id.  The timeline pairs each entry a webhook wrote
with that webhook's alert row, which links the raw request.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:30:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('timeline_entries', schema=None) as batch_op:
        batch_op.drop_constraint('fk_timeline_entries_raw_request_id_raw_requests', type_='foreignkey')
        batch_op.drop_column('raw_request_id')


def downgrade() -> None:
    with op.batch_alter_table('timeline_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('raw_request_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_timeline_entries_raw_request_id_raw_requests', 'raw_requests',
                                    ['raw_request_id'], ['id'], ondelete='SET NULL')
