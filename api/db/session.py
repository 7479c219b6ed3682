"""Engine and sessions. Engines are built from a URL when asked, never at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session as Session  # re-exported for the routes' type hints
from sqlalchemy.orm import sessionmaker


def sqlalchemy_url(url: str) -> str:
    """Accept plain postgresql:// URLs (as pgserver prints them) and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


Sessions = sessionmaker[Session]


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    return create_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=20, pool_pre_ping=True
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def org_lock_key(organization_id: str) -> int:
    """A stable 63-bit key for pg_advisory locks on one organization."""
    import hashlib

    return int.from_bytes(hashlib.sha256(organization_id.encode()).digest()[:8], "big") >> 1


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
