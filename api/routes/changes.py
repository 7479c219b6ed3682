"""Changes: the state of each mutation on its way to Git, and the organization's audit list."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import models as m
from api.db.access import is_org_user, organization_for
from api.db.changes import change_public, lifecycle
from api.deps import CurrentUser, SessionDep
from api.errors import NotFound
from api.schemas import ChangePublic

router = APIRouter(prefix="/api/v1", tags=["changes"])


def change_with_lifecycle(db: Session, user: m.User, change_id: int) -> ChangePublic:
    change = load_change(db, user, change_id)
    return change_public(change, history=lifecycle(db, change))


def load_change(db: Session, user: m.User, change_id: int) -> m.Change:
    db.rollback()  # a fresh snapshot on every read
    change = db.get(m.Change, change_id, populate_existing=True)
    if change is None or not (
        change.actor_id == user.id or is_org_user(db, user, change.organization_id)
    ):
        raise NotFound(f"change {change_id}")
    return change


@router.get("/changes/{change_id}")
async def get_change(
    change_id: int,
    request: Request,
    db: SessionDep,
    user: CurrentUser,
    wait: float = Query(0, ge=0, le=60, description="seconds to wait while the change is pending"),
) -> ChangePublic:
    change = await run_in_threadpool(change_with_lifecycle, db, user, change_id)
    if change.state != "pending" or wait == 0:
        return change
    settled = asyncio.Event()

    async def on_event(_: dict[str, Any]) -> None:
        settled.set()

    unsubscribe = await request.app.state.queue.subscribe_change_events(change_id, on_event)
    try:
        # Read again after subscribing: the worker may have finished in between.
        change = await run_in_threadpool(change_with_lifecycle, db, user, change_id)
        if change.state == "pending":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), timeout=wait)
            change = await run_in_threadpool(change_with_lifecycle, db, user, change_id)
    finally:
        await unsubscribe()
    return change


@router.get("/organizations/{org}/changes")
def list_changes(
    org: str,
    db: SessionDep,
    user: CurrentUser,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, description="only changes with a smaller id (paging)"),
) -> list[ChangePublic]:
    organization = organization_for(db, user, org)
    stmt = select(m.Change).where(m.Change.organization_id == organization.id)
    if before is not None:
        stmt = stmt.where(m.Change.id < before)
    return [change_public(c) for c in db.scalars(stmt.order_by(m.Change.id.desc()).limit(limit))]
