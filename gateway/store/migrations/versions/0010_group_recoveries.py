"""group_recoveries: the latest recovery of each alert group that spoke for the whole group

The incident store keeps it so that a member's firing from before it, delivered later,
opens nothing even when that member was never open.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 13:20:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('group_recoveries',
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('recovered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'],
                            name=op.f('fk_group_recoveries_incident_id_incidents')),
    sa.PrimaryKeyConstraint('fingerprint', name=op.f('pk_group_recoveries'))
    )


def downgrade() -> None:
    op.drop_table('group_recoveries')
