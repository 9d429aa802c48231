"""raw_requests_day_of(id): which day partition holds a request, found without planning every day

A stored request is opened by its id alone (the console's raw payload page, its raw bytes, and
``/api/events/<id>/raw``).  The id names no time, so PostgreSQL plans the statement over every day
partition and probes each one's primary key: with a year's 374 days, 25-95 ms of planning and 7-10 ms
of execution, where the same read naming its day takes under a millisecond (bench/HISTORY.md,
"Session 23").

Ids are handed out in the order requests are stored, and requests are stored as they are received,
so each day's ids follow the day before's.  The function bisects the day partitions by their
smallest id (one index end each; empty days are stepped over) and answers the last day whose
smallest id is not past the one asked: about nine tiny statements for a year.  A request stored a
moment after midnight with a time from just before it sits in the neighbouring day, so
``gateway.store.partitions.find_request`` reads the answer's day and its two neighbours, and reads
the whole journal only when that finds nothing (an id never stored, or a row loaded by hand into an
old day).  SQLite keeps one table and needs none of it.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 19:00:00
"""
from alembic import op

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION raw_requests_day_of(request_id bigint) RETURNS date LANGUAGE plpgsql STABLE AS $$
DECLARE
    days regclass[];
    low int := 1;
    high int;
    middle int;
    probe int;
    first_id bigint;
    found regclass;
BEGIN
    SELECT array_agg(c.oid::regclass ORDER BY c.relname) INTO days
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'raw_requests'::regclass AND c.relname LIKE 'raw\\_requests\\_p%';
    high := coalesce(array_length(days, 1), 0);
    WHILE low <= high LOOP
        middle := (low + high) / 2;
        probe := middle;
        first_id := NULL;
        WHILE probe <= high AND first_id IS NULL LOOP  -- the first day from the middle that holds a row
            EXECUTE format('SELECT min(id) FROM %s', days[probe]) INTO first_id;
            IF first_id IS NULL THEN
                probe := probe + 1;
            END IF;
        END LOOP;
        IF first_id IS NOT NULL AND first_id <= request_id THEN
            found := days[probe];
            low := probe + 1;
        ELSE  -- the days from the middle on are empty or begin past the id
            high := middle - 1;
        END IF;
    END LOOP;
    RETURN to_date(right(found::text, 8), 'YYYYMMDD');  -- NULL when no day begins at or before the id
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION raw_requests_day_of(bigint)')
