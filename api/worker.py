"""The worker: turns an organization's pending changes into one commit on its tenant repo.

A message only says "organization X has a pending change". The worker takes X's advisory
lock (so one organization is committed by one worker at a time, in order), reads every
pending change and the desired state in ONE snapshot, renders, and commits the result with
a trailer group per change. A burst of changes therefore becomes one commit, and a
redelivered message finds nothing pending. A crash between the Git commit and the database
update is repaired by finding the change ids in the trailers of recent commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from api.db import outbox
from api.db.outbox import PendingChange
from api.db.session import Sessions
from api.failpoints import failpoint
from api.queue import ChangeMessage, Queue
from api.settings import Settings
from reconciler.gitstore import (
    ChangeTrailer,
    CommitResult,
    Person,
    RepositoryExistsError,
    TenantRepoStore,
)
from reconciler.render import is_managed, render, skeleton_files
from reconciler.spec import TenantSpec

log = logging.getLogger("hexabase.worker")

NO_OP_REASON = "nothing to change in the repository"


def trailer(change: PendingChange) -> ChangeTrailer:
    return ChangeTrailer(
        change_id=str(change.id), actor=change.actor_email, request_id=change.request_id
    )


@dataclass
class Outcome:
    """What one pass over an organization did, for logs and tests."""

    committed: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    sha: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase


def commit_subject(changes: Sequence[PendingChange]) -> str:
    first = changes[0]
    subject = f"{first.action} {first.target}"
    if len(changes) > 1:
        subject += f" (+{len(changes) - 1} more)"
    return subject


def commit_body(changes: Sequence[PendingChange]) -> str:
    """One line per change, and Co-authored-by for every other person in the batch."""
    lines = (
        [f"- {c.action} {c.target} (change {c.id})" for c in changes] if len(changes) > 1 else []
    )
    authors = {(c.actor_name, c.actor_email) for c in changes[1:]} - {
        (changes[0].actor_name, changes[0].actor_email)
    }
    co = [f"Co-authored-by: {n} <{e}>" for n, e in sorted(authors)]
    return "\n".join([*lines, *([""] if lines and co else []), *co])


class Committer:
    """The synchronous core of the worker: database + renderer + Git store."""

    def __init__(
        self,
        sessions: Sessions,
        store: TenantRepoStore,
        *,
        issuer_url: str,
        vcluster_chart_version: str,
        renderer: Callable[[TenantSpec], dict[object, bytes]] | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.issuer_url = issuer_url
        self.vcluster_chart_version = vcluster_chart_version
        self.render = renderer or render

    def commit_organization(self, organization_id: str) -> Outcome:
        with outbox.organization_lock(self.sessions, organization_id):
            return self._commit_locked(organization_id)

    def _commit_locked(self, organization_id: str) -> Outcome:
        outcome = Outcome()
        started = time.perf_counter()
        pending, spec = outbox.snapshot(
            self.sessions,
            organization_id,
            issuer_url=self.issuer_url,
            vcluster_chart_version=self.vcluster_chart_version,
        )
        outcome.timings["snapshot"] = time.perf_counter() - started
        if not pending or spec is None:
            return outcome
        author = Person(pending[0].actor_name or pending[0].actor_email, pending[0].actor_email)
        if not self.store.exists(organization_id):
            with contextlib.suppress(RepositoryExistsError):  # created meanwhile: fine
                self.store.create(
                    organization_id,
                    skeleton_files(spec.organization),
                    author=author,
                    subject=f"Create tenant repository for {spec.organization.name}",
                )
        # Crash recovery: changes whose commit landed before the database heard of it.
        already = self.store.committed_change_ids(organization_id, [str(c.id) for c in pending])
        if already:
            sha = self._sha_carrying(organization_id, already)
            outbox.mark(self.sessions, [int(i) for i in already], "committed", sha=sha)
            outcome.recovered = sorted(int(i) for i in already)
        todo = [c for c in pending if str(c.id) not in already]
        if not todo:
            return outcome
        try:
            mark = time.perf_counter()
            rendered = self.render(spec)
            outcome.timings["render"] = time.perf_counter() - mark
        except ValueError as error:  # the spec cannot be rendered: retrying will not help
            reason = f"could not render the organization's manifests: {error}"
            outbox.mark(self.sessions, [c.id for c in todo], "failed", reason=reason)
            outcome.failed = [c.id for c in todo]
            return outcome
        failpoint("before-git-commit")  # rendered, nothing written anywhere yet
        mark = time.perf_counter()
        result: CommitResult = self.store.commit_rendered(
            organization_id,
            rendered,  # type: ignore[arg-type]
            is_managed=is_managed,
            author=Person(todo[0].actor_name or todo[0].actor_email, todo[0].actor_email),
            subject=commit_subject(todo),
            changes=[trailer(c) for c in todo],
            body=commit_body(todo),
        )
        outcome.timings["git"] = time.perf_counter() - mark
        failpoint("after-git-commit")  # the commit is in Git, the database does not know yet
        mark = time.perf_counter()
        outbox.mark(
            self.sessions,
            [c.id for c in todo],
            "committed",
            sha=result.sha,
            reason=None if result.committed else NO_OP_REASON,
        )
        outcome.timings["database"] = time.perf_counter() - mark
        outcome.committed = [c.id for c in todo]
        outcome.sha = result.sha
        log.info(
            "organization %s: %d change(s) %s in %.1f ms (%s)",
            organization_id,
            len(todo),
            f"committed as {result.sha[:12]}" if result.committed else "left the tree unchanged",
            (time.perf_counter() - started) * 1000,
            ", ".join(f"{k} {v * 1000:.1f}" for k, v in outcome.timings.items()),
        )
        return outcome

    def _sha_carrying(self, organization_id: str, change_ids: set[str]) -> dict[str, str]:
        shas: dict[str, str] = {}
        for record in self.store.log(organization_id, limit=200):
            for trailer in record.changes:
                if trailer.change_id in change_ids:
                    shas.setdefault(trailer.change_id, record.sha)
        return shas

    def stale_organizations(self, older_than: float) -> list[str]:
        return outbox.stale_organizations(self.sessions, older_than)

    def settled(self, change_ids: Sequence[int]) -> list[tuple[int, str, str | None]]:
        return outbox.states(self.sessions, change_ids)


class Worker:
    """Consumes change messages from JetStream and runs the Committer for each organization."""

    def __init__(self, committer: Committer, queue: Queue, *, ack_wait: float = 30.0) -> None:
        self.committer = committer
        self.queue = queue
        self.ack_wait = ack_wait
        self.stopping = False

    async def handle(self, message: ChangeMessage) -> bool:
        try:
            outcome = await asyncio.to_thread(
                self.committer.commit_organization, message.organization_id
            )
        except Exception:
            log.exception(
                "change %s (organization %s, delivery %s) failed; it will be retried",
                message.change_id,
                message.organization_id,
                message.delivery,
            )
            return False
        failpoint("before-ack")  # committed and marked; JetStream will deliver it again
        settled_ids = outcome.committed + outcome.recovered + outcome.failed
        for change_id, state, sha in await asyncio.to_thread(self.committer.settled, settled_ids):
            await self.queue.publish_event(
                change_id,
                message.organization_id,
                {"change_id": change_id, "state": state, "commit_sha": sha},
            )
        return True

    async def run(self) -> None:
        sweeper = asyncio.create_task(self.sweep_forever())
        try:
            await self.queue.work(self.handle, ack_wait=self.ack_wait, stop=lambda: self.stopping)
        finally:
            sweeper.cancel()

    async def sweep_forever(self, every: float = 10.0) -> None:
        """Liveness: an organization whose change stayed pending long after it was published
        (its message acknowledged but the mark lost in a crash) is committed anyway."""
        while not self.stopping:
            await asyncio.sleep(every)
            try:
                stale = await asyncio.to_thread(
                    self.committer.stale_organizations, 3 * self.ack_wait
                )
                for organization_id in stale:
                    log.warning(
                        "organization %s has stale pending changes; committing", organization_id
                    )
                    await self.handle(
                        ChangeMessage(change_id=0, organization_id=organization_id, delivery=0)
                    )
            except Exception:
                log.exception("sweep failed; trying again in %.0f s", every)


def committer_from_settings(settings: Settings, sessions: Sessions) -> Committer:
    from reconciler.gitstore import GitStore

    store = GitStore(
        settings.repos_path,
        committer=Person(settings.committer_name, settings.committer_email),
        push_url=settings.push_url_template or None,
        durability=settings.git_durability,
    )
    return Committer(
        sessions,
        store,
        issuer_url=settings.issuer_url,
        vcluster_chart_version=settings.vcluster_chart_version,
    )
