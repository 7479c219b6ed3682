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
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from api.db import models as m
from api.db.session import org_lock_key
from api.db.tenant import load_tenant_spec
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


@dataclass(frozen=True)
class PendingChange:
    id: int
    action: str
    target: str
    actor_name: str
    actor_email: str
    request_id: str

    def trailer(self) -> ChangeTrailer:
        return ChangeTrailer(
            change_id=str(self.id), actor=self.actor_email, request_id=self.request_id
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
        sessions: sessionmaker[Session],
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
        engine = self.sessions.kw["bind"]
        with engine.connect() as lock_conn:
            # Session-level advisory lock: held across the Git write, released on any exit
            # (also when this process dies, since PostgreSQL ends the session).
            lock_conn.execute(
                text("SELECT pg_advisory_lock(:k)"), {"k": org_lock_key(organization_id)}
            )
            try:
                return self._commit_locked(organization_id)
            finally:
                lock_conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": org_lock_key(organization_id)}
                )
                lock_conn.commit()

    def _snapshot(self, organization_id: str) -> tuple[list[PendingChange], TenantSpec | None]:
        """Pending changes and the desired state, read in one REPEATABLE READ snapshot so the
        state is exactly the one those changes produced."""
        with self.sessions() as session:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            rows = session.scalars(
                select(m.Change)
                .where(m.Change.organization_id == organization_id, m.Change.state == "pending")
                .order_by(m.Change.id)
            ).all()
            pending = [
                PendingChange(
                    id=c.id,
                    action=c.action,
                    target=c.target,
                    actor_name=c.actor_name,
                    actor_email=c.actor_email,
                    request_id=c.request_id,
                )
                for c in rows
            ]
            if not pending or session.get(m.Organization, organization_id) is None:
                return pending, None
            spec = load_tenant_spec(
                session,
                organization_id,
                issuer_url=self.issuer_url,
                vcluster_chart_version=self.vcluster_chart_version,
            )
            return pending, spec

    def _commit_locked(self, organization_id: str) -> Outcome:
        outcome = Outcome()
        started = time.perf_counter()
        pending, spec = self._snapshot(organization_id)
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
            self._mark(organization_id, [int(i) for i in already], "committed", sha=sha)
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
            self._mark(organization_id, [c.id for c in todo], "failed", reason=reason)
            outcome.failed = [c.id for c in todo]
            return outcome
        mark = time.perf_counter()
        result: CommitResult = self.store.commit_rendered(
            organization_id,
            rendered,  # type: ignore[arg-type]
            is_managed=is_managed,
            author=Person(todo[0].actor_name or todo[0].actor_email, todo[0].actor_email),
            subject=commit_subject(todo),
            changes=[c.trailer() for c in todo],
            body=commit_body(todo),
        )
        outcome.timings["git"] = time.perf_counter() - mark
        failpoint("after-git-commit")  # the commit is in Git, the database does not know yet
        mark = time.perf_counter()
        self._mark(
            organization_id,
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

    def _mark(
        self,
        organization_id: str,
        ids: list[int],
        state: str,
        *,
        sha: str | dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        now = datetime.now(UTC)
        with self.sessions() as session, session.begin():
            if state == "committed":
                # Safe to skip the WAL flush: a committed mark lost in a crash is found again
                # in the commit trailers (or re-rendered as a no-op) on the next pass.
                session.execute(text("SET LOCAL synchronous_commit = off"))
            for change_id in ids:
                commit_sha = sha.get(str(change_id)) if isinstance(sha, dict) else sha
                session.execute(
                    update(m.Change)
                    .where(m.Change.id == change_id, m.Change.state == "pending")
                    .values(
                        state=state,
                        commit_sha=commit_sha,
                        reason=reason,
                        committed_at=now,
                        attempts=m.Change.attempts + 1,
                    )
                )

    def stale_organizations(self, older_than: float) -> list[str]:
        """Organizations with a change published more than older_than seconds ago and still
        pending."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(m.Change.organization_id)
                    .where(m.Change.state == "pending", m.Change.published_at < cutoff)
                    .distinct()
                )
            )

    def settled(self, change_ids: Sequence[int]) -> list[tuple[int, str, str | None]]:
        with self.sessions() as session:
            rows = session.execute(
                select(m.Change.id, m.Change.state, m.Change.commit_sha).where(
                    m.Change.id.in_(change_ids)
                )
            ).all()
            return [(r[0], r[1], r[2]) for r in rows]


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


def committer_from_settings(settings: Settings, sessions: sessionmaker[Session]) -> Committer:
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
