"""``one_of``: a list as one parameter, so on PostgreSQL a statement's text does not change with
the list's length (``gateway.store.lists``)."""
from __future__ import annotations

import pytest
from sqlalchemy import Integer, column, select, table, text

from gateway.store.db import make_engine
from gateway.store.lists import one_of
from testkit.outbox import WORKER, gateway_maker
from testkit.support import sent_statements

numbers = table("numbers", column("n", Integer))


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url, group_commit=False)
    yield engine
    engine.dispose()


def test_one_of_matches_the_listed_values_and_an_empty_list_matches_nothing(engine):
    with engine.connect() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE numbers (n INTEGER)"))
        conn.execute(numbers.insert(), [{"n": n} for n in range(10)])
        listed = select(numbers.c.n).where(one_of(numbers.c.n, "ns")).order_by(numbers.c.n)
        assert conn.execute(listed, {"ns": [7, 2, 99, 2]}).scalars().all() == [2, 7]
        assert conn.execute(listed, {"ns": [5]}).scalars().all() == [5]
        assert conn.execute(listed, {"ns": []}).scalars().all() == []
        assert conn.execute(select(numbers.c.n).where(~one_of(numbers.c.n, "ns"), numbers.c.n < 3),
                            {"ns": [1]}).scalars().all() == [0, 2]


def test_the_text_is_one_for_every_length_on_postgresql(engine):
    with engine.connect() as conn:
        listed = select(numbers.c.n).where(one_of(numbers.c.n, "ns"))
        conn.execute(text("CREATE TEMPORARY TABLE numbers (n INTEGER)"))
        with sent_statements(engine) as statements:
            for length in (1, 3, 500):
                conn.execute(listed, {"ns": list(range(length))})
    assert len(statements) == (1 if engine.dialect.name == "postgresql" else 3)


def test_a_dispatchers_batches_send_the_same_texts_whatever_their_size(make_app, receiver, database_url):
    """Batches of 1 and of 4 rows: the dispatcher's reads and writes of a list of rows are one
    text each on PostgreSQL, so psycopg prepares them once instead of keeping one text per length."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no arrays: a list is one placeholder a value there")
    gw = gateway_maker(make_app, receiver)()
    texts = {}
    for size in (1, 4):
        for n in range(size):
            gw.post(f"size{size}-{n}")
        with sent_statements(gw.runtime.engine) as texts[size]:
            assert gw.dispatcher.run_once("hook", WORKER) == size
    assert texts[1] and texts[1] == texts[4]


def test_a_blocking_pass_sends_the_same_texts_whatever_it_marks(make_app, receiver, database_url):
    """PostgreSQL's side of test_outbox's SQLite pass: the pass locks the rows others wait for and
    marks the waiting ones by id, up to 2,000 at a time; one text each, however many."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite marks the rows in one statement of fixed text (test_outbox)")
    gw = gateway_maker(make_app, receiver)()
    receiver.default = (503, {}, "down")
    texts = {}
    for problems in ("pq", "rstuvw"):
        for problem in problems:
            gw.post(problem)
            gw.post(problem, "resolved")
        with sent_statements(gw.runtime.engine) as texts[problems]:
            assert gw.dispatcher.block_waiting("hook") == len(problems)  # each recovery, behind its alert
    assert texts["pq"] and texts["pq"] == texts["rstuvw"]
