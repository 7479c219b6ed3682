"""Users and their personal API tokens, for the CLI and the tests."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import new_token, token_hash
from api.db import models as m


def create_token(
    sessions: sessionmaker[Session], *, email: str, name: str = "", token_name: str = "cli"
) -> str:
    """Create the user if needed and a new token for them; returns the token (shown once)."""
    token = new_token()
    with sessions() as session, session.begin():
        user = session.scalars(select(m.User).where(m.User.email == email.lower())).first()
        if user is None:
            user = m.User(email=email.lower(), name=name)
            session.add(user)
            session.flush()
        elif name and not user.name:
            user.name = name
        session.add(m.ApiToken(user_id=user.id, name=token_name, token_hash=token_hash(token)))
    return token


def user_by_token(session: Session, token: str) -> m.User | None:
    return session.scalars(
        select(m.User).join(m.ApiToken).where(m.ApiToken.token_hash == token_hash(token))
    ).first()
