"""The signed-in user and their personal API tokens."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import new_token, token_hash
from api.db import models as m
from api.deps import CurrentUser, SessionDep
from api.schemas import TokenCreate, TokenCreated, UserPublic

router = APIRouter(prefix="/api/v1", tags=["me"])


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.post("/me/tokens", status_code=201)
def create_token(body: TokenCreate, db: SessionDep, user: CurrentUser) -> TokenCreated:
    token = new_token()
    with db.begin():
        row = m.ApiToken(user_id=user.id, name=body.name, token_hash=token_hash(token))
        db.add(row)
    return TokenCreated(id=row.id, name=row.name, token=token)
