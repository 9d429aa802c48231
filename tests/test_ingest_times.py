"""Alert times from vendors' clocks: kept as sent, but never far in the future."""
from datetime import datetime, timedelta, timezone

from sqlalchemy import create_engine, select

from gateway.store.models import AlertRow


def test_alert_time_is_kept_but_capped_at_five_minutes_ahead(client, database_url):
    past = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    future = datetime.now(timezone.utc) + timedelta(days=3)
    for ident, at in (("past", past), ("future", future)):
        assert client.post("/hooks/testsrc/src/", json={"id": ident, "title": ident, "at": at.isoformat()}).status_code == 202

    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(AlertRow.external_id, AlertRow.occurred_at)).all())
    engine.dispose()
    assert stored["past"].replace(tzinfo=timezone.utc) == past
    capped = stored["future"].replace(tzinfo=stored["future"].tzinfo or timezone.utc)
    assert timedelta(minutes=4) < capped - datetime.now(timezone.utc) <= timedelta(minutes=5)
