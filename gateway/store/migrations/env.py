"""Alembic environment: the URL comes from the caller (``gateway db upgrade``), not an ini file."""
from alembic import context

from gateway.store.db import make_engine, writing
from gateway.store.models import Base

config = context.config
url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url)
    with engine.connect() as connection:
        writing(connection)  # migrations write outside run_in_transaction
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
