"""incidents: an index on (status, severity's rank, id descending), for the console's severity sort

The console's list is always one status tab; sorted by severity it ordered the tab's incidents by a
CASE over their severity that no index held, so every page sorted the whole tab: 116.6 ms at p95
(SQLite) and 104.9 ms (PostgreSQL) at 100,000 incidents, more with each incident stored.  An
index on that very expression walks the tab in the sort's order and stops at the page.  The
expression is written with literals, as the list's ORDER BY is (``SEVERITY_RANK_SQL``), so that the
planners of both databases match the one to the other.

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


def downgrade() -> None:
    op.drop_index('ix_incidents_status_severity_rank_id', table_name='incidents')
