"""alerts: unique (source_key, external_id), annotations and links

Idempotency moves from the request to each alert: a repeated group stores no alert twice,
a group that gained an alert stores only the new one.  Before, the alerts of one request
could share an external id (OCI set the message id on every metric stream's alert), so
of the rows sharing one, all but the first lose it (their request keeps it).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 13:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE alerts SET external_id = NULL WHERE external_id IS NOT NULL AND id > ("
        "SELECT MIN(earlier.id) FROM alerts AS earlier "
        "WHERE earlier.source_key = alerts.source_key AND earlier.external_id = alerts.external_id)"
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('annotations', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('links', sa.JSON(), nullable=True))
        batch_op.create_index('uq_alerts_source_key_external_id', ['source_key', 'external_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('uq_alerts_source_key_external_id')
        batch_op.drop_column('links')
        batch_op.drop_column('annotations')
