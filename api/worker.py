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
from pathlib import PurePosixPath

from api.db import outbox
from api.db.outbox import PendingChange
from api.db.platform import read_platform_spec
from api.db.session import Sessions
from api.failpoints import failpoint
from api.notify import HttpNotifier, Notifier
from api.queue import ChangeMessage, Queue
from api.settings import Settings
from reconciler.gitstore import (
    ChangeTrailer,
    CommitResult,
    Person,
    RepositoryExistsError,
    TenantRepoStore,
)
from reconciler.platform import (
    PLATFORM_RECEIVER,
    PLATFORM_REPO_ID,
    render_platform,
    tenant_receiver,
)
from reconciler.platform import is_managed as is_platform_managed
from reconciler.platform import skeleton_files as platform_skeleton_files
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
    organization_name: str | None = None
    moved: bool = False  # main has a new commit (made now, or found after a crash)
    platform_sha: str | None = None  # the platform repository's new commit, if any
    notified: bool = False
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
    """The synchronous core of the worker: database + renderer + Git store.

    With `git_base_url` set it also keeps the platform repository (every organization's Flux
    source and namespaces) up to date; with a `notifier`, it tells the organization's Flux
    Receiver about each new commit."""

    def __init__(
        self,
        sessions: Sessions,
        store: TenantRepoStore,
        *,
        issuer_url: str,
        vcluster_chart_version: str,
        vcluster_chart_repository: str = "https://charts.loft.sh",
        renderer: Callable[[TenantSpec], dict[PurePosixPath, bytes]] | None = None,
        git_base_url: str = "",
        notifier: Notifier | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.issuer_url = issuer_url
        self.vcluster_chart_version = vcluster_chart_version
        self.vcluster_chart_repository = vcluster_chart_repository
        self.render = renderer or render
        self.git_base_url = git_base_url
        self.notifier = notifier

    def commit_organization(self, organization_id: str) -> Outcome:
        with outbox.organization_lock(self.sessions, organization_id):
            outcome = self._commit_locked(organization_id)
        # Outside the lock: a slow receiver never holds up the organization's next commit.
        if self.notifier is not None and outcome.moved and outcome.organization_name:
            assert outcome.sha is not None
            mark = time.perf_counter()
            outcome.notified = self.notifier.repository_moved(
                tenant_receiver(outcome.organization_name),
                repository=organization_id,
                revision=outcome.sha,
                change_ids=outcome.committed + outcome.recovered,
            )
            if outcome.platform_sha is not None:  # a new namespace list: Flux should see it now
                self.notifier.repository_moved(
                    PLATFORM_RECEIVER,
                    repository=PLATFORM_REPO_ID,
                    revision=outcome.platform_sha,
                    change_ids=outcome.committed + outcome.recovered,
                )
            outcome.timings["notify"] = time.perf_counter() - mark
        return outcome

    def _commit_locked(self, organization_id: str) -> Outcome:
        outcome = Outcome()
        started = time.perf_counter()
        pending, spec = outbox.snapshot(
            self.sessions,
            organization_id,
            issuer_url=self.issuer_url,
            vcluster_chart_version=self.vcluster_chart_version,
            vcluster_chart_repository=self.vcluster_chart_repository,
        )
        outcome.timings["snapshot"] = time.perf_counter() - started
        if not pending or spec is None:
            return outcome
        outcome.organization_name = spec.organization.name
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
        recovered = [c for c in pending if str(c.id) in already]
        todo = [c for c in pending if str(c.id) not in already]
        result: CommitResult | None = None
        failed_reason = ""
        if todo:
            try:
                mark = time.perf_counter()
                rendered = self.render(spec)
                outcome.timings["render"] = time.perf_counter() - mark
            except ValueError as error:  # the spec cannot be rendered: retrying will not help
                failed_reason = f"could not render the organization's manifests: {error}"
            else:
                failpoint("before-git-commit")  # rendered, nothing written anywhere yet
                mark = time.perf_counter()
                result = self.store.commit_rendered(
                    organization_id,
                    rendered,
                    is_managed=is_managed,
                    author=Person(todo[0].actor_name or todo[0].actor_email, todo[0].actor_email),
                    subject=commit_subject(todo),
                    changes=[trailer(c) for c in todo],
                    body=commit_body(todo),
                )
                outcome.timings["git"] = time.perf_counter() - mark
                failpoint("after-git-commit")  # the commit is in Git, the database does not know
        # The platform repository lists every organization and its workspace namespaces. It is
        # brought up to date before any change is marked, so a crash in between leaves the
        # change pending, and its redelivery re-renders the platform (a no-op if it landed).
        settled = recovered + (todo if result is not None else [])
        if settled:
            self._commit_platform(settled, outcome)
        mark = time.perf_counter()
        if recovered:
            sha = self._sha_carrying(organization_id, already)
            outbox.mark(self.sessions, [c.id for c in recovered], "committed", sha=sha)
            outcome.recovered = sorted(c.id for c in recovered)
            outcome.moved = True
            outcome.sha = self.store.head(organization_id)
        if failed_reason:
            outbox.mark(self.sessions, [c.id for c in todo], "failed", reason=failed_reason)
            outcome.failed = [c.id for c in todo]
        if result is not None:
            outbox.mark(
                self.sessions,
                [c.id for c in todo],
                "committed",
                sha=result.sha,
                reason=None if result.committed else NO_OP_REASON,
            )
            outcome.committed = [c.id for c in todo]
            outcome.sha = result.sha
            outcome.moved = outcome.moved or result.committed
        outcome.timings["database"] = time.perf_counter() - mark
        if result is not None:
            log.info(
                "organization %s: %d change(s) %s in %.1f ms (%s)",
                organization_id,
                len(todo),
                f"committed as {result.sha[:12]}"
                if result.committed
                else "left the tree unchanged",
                (time.perf_counter() - started) * 1000,
                ", ".join(f"{k} {v * 1000:.1f}" for k, v in outcome.timings.items()),
            )
        return outcome

    def _commit_platform(self, changes: Sequence[PendingChange], outcome: Outcome) -> None:
        """Render the platform repository from the database and commit it, under a lock of its
        own (taken inside an organization's lock, never the other way round)."""
        if not self.git_base_url:
            return
        mark = time.perf_counter()
        ids = ", ".join(str(c.id) for c in changes)
        with outbox.organization_lock(self.sessions, PLATFORM_REPO_ID):
            try:
                rendered = render_platform(
                    read_platform_spec(self.sessions, git_base_url=self.git_base_url)
                )
            except ValueError as error:  # bad rows (say, a name from before a rule): never
                # block the tenants' changes on it; the platform repository stays as it was.
                log.error(
                    "change(s) %s: the platform repository cannot be rendered and is left as "
                    "it is: %s",
                    ids,
                    error,
                )
                return
            author = Person(changes[0].actor_name or changes[0].actor_email, changes[0].actor_email)
            if not self.store.exists(PLATFORM_REPO_ID):
                with contextlib.suppress(RepositoryExistsError):
                    self.store.create(
                        PLATFORM_REPO_ID,
                        platform_skeleton_files(),
                        author=author,
                        subject="Create platform repository",
                    )
            result = self.store.commit_rendered(
                PLATFORM_REPO_ID,
                rendered,
                is_managed=is_platform_managed,
                author=author,
                subject=commit_subject(changes),
                changes=[trailer(c) for c in changes],
                body=commit_body(changes),
            )
        outcome.platform_sha = result.sha if result.committed else None
        outcome.timings["platform"] = time.perf_counter() - mark

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
                {"entity": "change", "id": str(change_id), "state": state, "commit_sha": sha},
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
    notifier = (
        HttpNotifier(
            settings.receiver_base_url, settings.receiver_token, timeout=settings.receiver_timeout
        )
        if settings.receiver_base_url
        else None
    )
    return Committer(
        sessions,
        store,
        issuer_url=settings.issuer_url,
        vcluster_chart_version=settings.vcluster_chart_version,
        vcluster_chart_repository=settings.vcluster_chart_repository,
        git_base_url=settings.git_base_url,
        notifier=notifier,
    )
