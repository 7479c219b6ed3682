"""The FastAPI application: routes, request ids, and the outbox relay in its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response

from api.db.session import make_engine, make_sessionmaker
from api.queue import Queue
from api.relay import Relay
from api.routes import changes, events, me, organizations, projects, workspaces
from api.settings import Settings

REQUEST_ID = "x-request-id"


def create_app(settings: Settings) -> FastAPI:
    """The API, wired to the database and NATS named in settings (both must be up)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.sessions = make_sessionmaker(engine)
        app.state.queue = await Queue.connect(
            settings.nats_url, stream=settings.stream_name, prefix=settings.subject_prefix
        )
        app.state.relay = Relay(app.state.sessions, app.state.queue)
        relay_task = asyncio.create_task(app.state.relay.run())
        try:
            yield
        finally:
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task
            await app.state.queue.close()
            engine.dispose()

    app = FastAPI(
        title="Hexabase",
        version="0.1.0",
        summary="Multi-tenant Kubernetes as a Service; every action becomes a Git commit.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get(REQUEST_ID, "")
        ok = 0 < len(given) <= 64 and all(c.isalnum() or c in "-_." for c in given)
        request.state.request_id = given if ok else uuid.uuid4().hex
        response = await call_next(request)
        response.headers[REQUEST_ID] = request.state.request_id
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for module in (me, organizations, workspaces, projects, changes, events):
        app.include_router(module.router)
    return app
