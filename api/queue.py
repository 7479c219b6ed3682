"""The NATS adapter: the JetStream work stream for changes and core-NATS change events.

Only this module imports nats. A change is published with Nats-Msg-Id = its id, so a
relay that publishes it twice (after a crash) is deduplicated by JetStream.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

WORKERS_CONSUMER = "workers"


@dataclass(frozen=True)
class Subjects:
    prefix: str

    @property
    def changes(self) -> str:
        return f"{self.prefix}.changes.>"

    def change(self, organization_id: str) -> str:
        return f"{self.prefix}.changes.{organization_id}"

    def change_event(self, change_id: int) -> str:
        return f"{self.prefix}.events.change.{change_id}"

    def org_events(self, organization_id: str) -> str:
        return f"{self.prefix}.events.org.{organization_id}"


@dataclass(frozen=True)
class ChangeMessage:
    change_id: int
    organization_id: str
    delivery: int  # 1 on first delivery


class Queue:
    """One NATS connection with the change stream set up."""

    def __init__(self, nc: Client, js: JetStreamContext, subjects: Subjects, stream: str) -> None:
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.stream = stream

    @classmethod
    async def connect(cls, url: str, *, stream: str, prefix: str) -> Queue:
        nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        js = nc.jetstream()
        subjects = Subjects(prefix)
        config = StreamConfig(
            name=stream,
            subjects=[subjects.changes],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=600.0,  # seconds in which a re-published change id is dropped
        )
        try:
            await js.stream_info(stream)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
        return cls(nc, js, subjects, stream)

    async def close(self) -> None:
        # flush + close, not drain: draining a pull subscription waits out its timeout.
        if not self.nc.is_closed:
            await self.nc.flush()
            await self.nc.close()

    async def publish_change(self, change_id: int, organization_id: str) -> None:
        await self.js.publish(
            self.subjects.change(organization_id),
            json.dumps({"change_id": change_id, "organization_id": organization_id}).encode(),
            headers={"Nats-Msg-Id": str(change_id)},
        )

    async def publish_event(
        self, change_id: int | None, organization_id: str, body: dict[str, Any]
    ) -> None:
        """A state change, on the organization's subject and, for a change, on its own."""
        data = json.dumps(body, default=str).encode()
        if change_id:
            await self.nc.publish(self.subjects.change_event(change_id), data)
        await self.nc.publish(self.subjects.org_events(organization_id), data)

    async def subscribe_org_events(
        self, organization_id: str, handler: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        async def on_msg(msg: Msg) -> None:
            await handler(json.loads(msg.data))

        sub = await self.nc.subscribe(self.subjects.org_events(organization_id), cb=on_msg)
        return sub.unsubscribe

    async def subscribe_change_events(
        self, change_id: int, handler: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        async def on_msg(msg: Msg) -> None:
            await handler(json.loads(msg.data))

        sub = await self.nc.subscribe(self.subjects.change_event(change_id), cb=on_msg)
        return sub.unsubscribe

    async def work(
        self,
        handle: Callable[[ChangeMessage], Awaitable[bool]],
        *,
        batch: int = 16,
        ack_wait: float = 30.0,
        max_deliver: int = 10,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Consume changes with explicit ack until stop() is true. handle returns True to ack,
        False to ask for redelivery later. Several processes may share the durable consumer."""
        sub = await self.js.pull_subscribe(
            self.subjects.changes,
            durable=WORKERS_CONSUMER,
            stream=self.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, max_deliver=max_deliver
            ),
        )
        while not stop():
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except TimeoutError:
                continue
            for msg in msgs:
                body = json.loads(msg.data)
                message = ChangeMessage(
                    change_id=int(body["change_id"]),
                    organization_id=str(body["organization_id"]),
                    delivery=msg.metadata.num_delivered,
                )
                if await handle(message):
                    await msg.ack()
                else:
                    await msg.nak(delay=min(2.0 * message.delivery, 30.0))
