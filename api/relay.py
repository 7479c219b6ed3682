"""The outbox relay: hands committed Change rows to JetStream.

It runs in every API process. A mutation kicks it right after its transaction commits
(the fast path); a periodic sweep catches anything a crash left unpublished. JetStream's
de-duplication on Nats-Msg-Id makes a second publish of the same change harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from api.db import outbox
from api.db.session import Sessions
from api.queue import Queue

log = logging.getLogger("hexabase.relay")


class Relay:
    def __init__(self, sessions: Sessions, queue: Queue, *, sweep_every: float = 1.0) -> None:
        self.sessions = sessions
        self.queue = queue
        self.sweep_every = sweep_every
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def kick(self) -> None:
        """Thread-safe: called by request handlers after their transaction committed."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await self.publish_pending()
            except Exception:  # the sweep retries; a relay never dies on one bad round
                log.exception("relay round failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.sweep_every)
            self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish every unpublished change; returns how many."""
        total = 0
        while True:
            with outbox.claim_unpublished(self.sessions) as claim:
                if not claim.changes:
                    return total
                # Publish while the rows are locked: a crash before the commit leaves them
                # unpublished, and the next round publishes them again (deduplicated).
                for change_id, organization_id in claim.changes:
                    await self.queue.publish_change(change_id, organization_id)
                claim.mark_published()
            total += len(claim.changes)
