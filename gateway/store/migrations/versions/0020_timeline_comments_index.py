"""timeline_entries: the comments of an incident, indexed by it, for the walk of a broad search

A broad search (``gateway.incidents.search``) tests each incident it walks for a comment holding
``q``.  By ``ix_timeline_entries_incident_id_id`` that reads every entry of the incident (its
creation, each status change) and throws away all that are no comment; this index holds the
comments alone, so the test reads only those.  Comments are rare among entries: the index is small
and a webhook's entries never write it.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 23:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

COMMENTS = "kind = 'commented'"


def upgrade() -> None:
    op.create_index('ix_timeline_entries_comments_incident_id', 'timeline_entries', ['incident_id'], unique=False,
                    sqlite_where=sa.text(COMMENTS), postgresql_where=sa.text(COMMENTS))


def downgrade() -> None:
    op.drop_index('ix_timeline_entries_comments_incident_id', table_name='timeline_entries')
