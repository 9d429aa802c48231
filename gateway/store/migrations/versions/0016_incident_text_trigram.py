"""incidents: one trigram index on the three searched columns joined, instead of one on each

A search for ``host-4242`` among a million incidents whose titles and resource names all hold
``host-`` spent 8 ms in the title's index and 9 ms in the resource name's (frequent trigrams'
posting lists are a million entries long), and the API runs it twice (the page and its capped
count).  One index on ``INCIDENT_TEXT`` answers for all three columns in one scan: 8.3 ms
(bench/scale.py's data).  The query keeps the three ILIKEs, so what a search finds is unchanged.
PostgreSQL only, and only where 0009 could create pg_trgm.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 18:25:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

COLUMNS = ('title', 'description', 'resource_name')
TEXT = "title || ' ' || description || ' ' || resource_name"  # gateway.store.models.INCIDENT_TEXT at 0016


def _trigram_schema():
    """Where pg_trgm lives, or None: not PostgreSQL, or 0009 could not create it."""
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return None
    return bind.execute(sa.text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n"
                                " ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'")).scalar()


def upgrade() -> None:
    schema = _trigram_schema()
    if schema is None:
        return
    op.execute(f'CREATE INDEX ix_incidents_text_trgm ON incidents USING gin (({TEXT}) "{schema}".gin_trgm_ops)')
    for column in COLUMNS:
        op.execute(f'DROP INDEX IF EXISTS ix_incidents_{column}_trgm')


def downgrade() -> None:
    schema = _trigram_schema()
    if schema is None:
        return
    for column in COLUMNS:
        op.create_index(f'ix_incidents_{column}_trgm', 'incidents', [column], postgresql_using='gin',
                        postgresql_ops={column: f'"{schema}".gin_trgm_ops'})
    op.execute('DROP INDEX IF EXISTS ix_incidents_text_trgm')
