"""Request dependencies: the database session, the current user, the request context."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.db import models as m
from api.db.session import Session
from api.db.users import user_by_token


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def current_user(request: Request, db: SessionDep) -> m.User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            401,
            detail=(
                "send 'Authorization: Bearer <token>'; "
                "create a token with `hexabase token create --email you@example.com`"
            ),
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = user_by_token(db, token)
    if user is None:
        raise HTTPException(
            401, detail="unknown or revoked token", headers={"WWW-Authenticate": "Bearer"}
        )
    db.rollback()  # end the read transaction; handlers open their own
    return user


CurrentUser = Annotated[m.User, Depends(current_user)]


@dataclass(frozen=True)
class Context:
    """What a mutation needs besides its body: who acts, under which request id, and how to
    wake the outbox relay once the transaction has committed."""

    user: m.User
    request_id: str
    request: Request

    def committed(self) -> None:
        self.request.app.state.relay.kick()


def context(request: Request, user: CurrentUser) -> Context:
    return Context(user=user, request_id=request.state.request_id, request=request)


ContextDep = Annotated[Context, Depends(context)]
