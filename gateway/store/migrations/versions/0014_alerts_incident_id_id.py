"""alerts: the incident index carries the alert id, so an incident's latest alert is one entry

The incident page asks for its incident's latest webhook alert (ORDER BY id DESC LIMIT 1).
With ``incident_id`` alone indexed, PostgreSQL walked the whole primary key backwards, filtering
on the incident: 45 ms for an incident in the middle of 1.6 million alerts (bench/scale.py), and
every alert for the oldest.  With the id in the index it is the first entry of the incident's
range, and the timeline reads the incident's alerts already in id order.  It replaces the
one-column index: the same number of indexes to write.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 18:35:00
"""
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_alerts_incident_id_id', 'alerts', ['incident_id', 'id'], unique=False)
    op.drop_index('ix_alerts_incident_id', table_name='alerts')


def downgrade() -> None:
    op.create_index('ix_alerts_incident_id', 'alerts', ['incident_id'], unique=False)
    op.drop_index('ix_alerts_incident_id_id', table_name='alerts')
