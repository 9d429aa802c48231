"""incidents: the console's severity and event-count sorts walk an index within a status tab

The console's list is always one status tab.  Sorted by severity (a CASE over the severity) or by
events (event_count), it ordered the tab by something no index held, so every page sorted the whole
tab: at a million incidents, 429 ms (SQLite) and 309 ms (PostgreSQL) for the severity sort.  An index
on (status, the sort, id) walks the tab in the sort's order and stops at the page.  The severity's
rank is written with literals, as the list's ORDER BY is (``SEVERITY_RANK_SQL``), so that both
planners match the one to the other.  Each costs a webhook that joins an incident one index entry
more (about 0.7 % of its instructions on SQLite).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 07:15:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

RANK = ("(CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2 WHEN 'info' THEN 3"
        " END)")  # gateway.store.models.SEVERITY_RANK_SQL at 0021


def upgrade() -> None:
    op.create_index('ix_incidents_status_severity_rank_id', 'incidents', ['status', sa.text(RANK), sa.text('id DESC')])
    op.create_index('ix_incidents_status_event_count_id', 'incidents', ['status', 'event_count', 'id'])


def downgrade() -> None:
    op.drop_index('ix_incidents_status_event_count_id', table_name='incidents')
    op.drop_index('ix_incidents_status_severity_rank_id', table_name='incidents')
