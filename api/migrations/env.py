"""Alembic environment: the URL comes from the caller (api.db.migrate), never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from api.db.models import Base
from api.db.session import sqlalchemy_url

config = context.config
url = sqlalchemy_url(config.get_main_option("sqlalchemy.url") or "")
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
