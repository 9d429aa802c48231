"""refused_requests keep the request itself: what replay runs again and the API shows

0006 made refused_requests for the console (who was refused, and why); each row now also
keeps the request as the raw journal keeps it, and whether the source's verify had passed.
Rows from before have an empty body and are not verified, so replay skips them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 13:10:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

def added() -> tuple[sa.Column, ...]:
    """The new columns, made afresh for each use (a Column belongs to one table).  Server defaults
    fill the rows already there; they are dropped once filled, as the model has none.  An empty
    body is written X'' on SQLite: a plain '' would be stored as text and read back as a str."""
    empty_bytes = sa.text("X''") if op.get_bind().dialect.name == "sqlite" else ''
    return (
        sa.Column('source_type', sa.String(length=64), nullable=False, server_default=''),
        sa.Column('method', sa.String(length=8), nullable=False, server_default='POST'),
        sa.Column('path', sa.String(length=512), nullable=False, server_default=''),
        sa.Column('headers', sa.JSON(), nullable=False, server_default='{}'),
        sa.Column('body', sa.LargeBinary(), nullable=False, server_default=empty_bytes),
        sa.Column('content_type', sa.String(length=255), nullable=True),
        sa.Column('verified', sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def upgrade() -> None:
    with op.batch_alter_table('refused_requests') as batch_op:
        for column in added():
            batch_op.add_column(column)
    with op.batch_alter_table('refused_requests') as batch_op:
        for column in added():
            if column.server_default is not None:
                batch_op.alter_column(column.name, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('refused_requests') as batch_op:
        for column in reversed(added()):
            batch_op.drop_column(column.name)
