"""Live state changes as server-sent events, fed through NATS so any API replica can serve
them: per organization, and per change (which ends once the change is applied or failed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.db.access import organization_for
from api.db.changes import change_public
from api.deps import CurrentUser, SessionDep
from api.routes.changes import load_change

router = APIRouter(prefix="/api/v1", tags=["events"])

FINAL_STATES = ("applied", "failed")
KEEPALIVE_SECONDS = 15.0


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def _stream(
    request: Request, queue: asyncio.Queue[dict[str, Any]], first: list[bytes], final: bool
) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    while not await request.is_disconnected():
        try:
            event = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
        except TimeoutError:
            yield b": keepalive\n\n"
            continue
        yield sse("state", event)
        if final and event.get("state") in FINAL_STATES:
            return


@router.get("/organizations/{org}/events")
async def organization_events(
    org: str, request: Request, db: SessionDep, user: CurrentUser
) -> StreamingResponse:
    organization = await run_in_threadpool(organization_for, db, user, org)
    db.rollback()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(event: dict[str, Any]) -> None:
        await queue.put(event)

    unsubscribe = await request.app.state.queue.subscribe_org_events(organization.id, on_event)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in _stream(request, queue, [b": subscribed\n\n"], final=False):
                yield chunk
        finally:
            await unsubscribe()

    return StreamingResponse(body(), media_type="text/event-stream")


@router.get("/changes/{change_id}/events")
async def change_events(
    change_id: int, request: Request, db: SessionDep, user: CurrentUser
) -> StreamingResponse:
    """The change's current state first, then each transition; ends when applied or failed."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_event(event: dict[str, Any]) -> None:
        await queue.put(event)

    unsubscribe = await request.app.state.queue.subscribe_change_events(change_id, on_event)
    try:
        # Read after subscribing, so no transition falls between the read and the stream.
        change = change_public(await run_in_threadpool(load_change, db, user, change_id))
    except BaseException:
        await unsubscribe()
        raise
    current = change.model_dump(mode="json")
    first = [sse("state", {**current, "entity": "change", "id": str(change_id)})]

    async def body() -> AsyncIterator[bytes]:
        try:
            if change.state in FINAL_STATES:
                for chunk in first:
                    yield chunk
                return
            async for chunk in _stream(request, queue, first, final=True):
                yield chunk
        finally:
            await unsubscribe()

    return StreamingResponse(body(), media_type="text/event-stream")
