"""raw_requests_oldest(): when the oldest request the raw journal keeps was received, on PostgreSQL

Pages that link a row to its raw request show the link only while the request is kept: received
no earlier than the journal's oldest (``kept_raw_request_id``).  Asked of the partitioned table,
``min(received_at)`` plans and opens every day partition: with a year's 373, 15-60 ms of planning
and 5-15 ms of execution for each incident page (bench/scale.py), where the rest of the page took
~15 ms.  The function asks the default partition and the day partitions oldest first, and stops
at the first that holds a row: retention drops whole days from the oldest, so that is nearly
always the first.  SQLite keeps one table and asks it directly.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 19:10:00
"""
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION raw_requests_oldest() RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    day regclass;
    found timestamptz;
    oldest timestamptz;
BEGIN
    SELECT min(received_at) INTO oldest FROM raw_requests_default;
    FOR day IN SELECT c.oid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'raw_requests'::regclass AND c.relname LIKE 'raw\\_requests\\_p%'
               ORDER BY c.relname
    LOOP
        EXECUTE format('SELECT min(received_at) FROM %s', day) INTO found;
        IF found IS NOT NULL THEN
            RETURN LEAST(found, oldest);
        END IF;
    END LOOP;
    RETURN oldest;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION raw_requests_oldest()')
