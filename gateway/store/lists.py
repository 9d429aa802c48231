"""``one_of``: a column's value among a list passed as one parameter, the same SQL for any length;
``count_up_to``: how many rows a query selects, counted no further than needed.

SQLAlchemy's ``in_`` writes one placeholder per value, so each length of list is a statement of its
own text.  psycopg keeps up to 100 texts per connection, to prepare the ones run five times: the
dispatcher's lists (a batch's ids; up to 2,000 rows in a blocking pass) filled that with statements
of up to 2,000 placeholders, the serve workers grew by 5.5 and 6.8 MiB in a drain, and PostgreSQL
parsed and planned each text anew (bench/HISTORY.md, "Session 15").  On PostgreSQL the list goes as
one array (``= ANY(:name)``: one text, prepared once); elsewhere as ``IN`` with one placeholder a
value (SQLite has no arrays).
"""
from __future__ import annotations

from sqlalchemy import Boolean, Connection, Select, any_, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


class OneOf(ColumnElement):
    """``column`` is one of the values of the list parameter ``name`` (an empty list matches nothing)."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement), ("name", InternalTraversal.dp_string)]
    _is_implicitly_boolean = True  # a condition as it stands: no "= 1" added on SQLite
    type = Boolean()

    def __init__(self, column, name: str):
        self.column, self.name = column, name


def one_of(column, name: str) -> OneOf:
    """A condition for ``where``: ``column``'s value is in the list given as parameter ``name``."""
    return OneOf(column, name)


@compiles(OneOf)
def _in_placeholders(element: OneOf, compiler, **kw) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(OneOf, "postgresql")
def _any_of_array(element: OneOf, compiler, **kw) -> str:
    return compiler.process(element.column == any_(bindparam(element.name, type_=ARRAY(element.column.type))), **kw)


def count_up_to(conn: Connection, query: Select, most: int, *, in_order: bool = False) -> int:
    """How many rows ``query`` selects, counting at most ``most``: a count reads every row it counts.
    ``in_order``: the first ``most`` in ``query``'s order, read along the index that serves it, where
    the planner may otherwise read a table from its start and filter its way to them."""
    counted = query if in_order else query.order_by(None)
    counted = counted.with_only_columns(literal_column("1"), maintain_column_froms=True).limit(most)
    return conn.execute(select(func.count()).select_from(counted.subquery())).scalar_one()
