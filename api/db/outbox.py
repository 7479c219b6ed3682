"""The outbox side of Change rows: what the relay and the workers read and mark.

Marks that a crash may lose without harm skip the WAL flush (synchronous_commit off): a lost
"published" mark only causes a deduplicated re-publish, and a lost "committed" mark is found
again in the commit trailers (or re-rendered as a no-op).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from api.db import models as m
from api.db.session import org_lock_key
from api.db.tenant import load_tenant_spec
from reconciler.spec import TenantSpec


@dataclass(frozen=True)
class PendingChange:
    id: int
    action: str
    target: str
    actor_name: str
    actor_email: str
    request_id: str


@dataclass
class Claim:
    """Unpublished changes, row-locked until the block ends; mark them once published."""

    session: Session
    changes: list[tuple[int, str]]  # (change id, organization id)

    def mark_published(self) -> None:
        self.session.execute(
            update(m.Change)
            .where(m.Change.id.in_([c for c, _ in self.changes]))
            .values(published_at=datetime.now(UTC))
        )


@contextmanager
def claim_unpublished(sessions: sessionmaker[Session], limit: int = 200) -> Iterator[Claim]:
    """SKIP LOCKED: two relays never claim the same change; commits when the block ends."""
    with sessions() as session, session.begin():
        session.execute(text("SET LOCAL synchronous_commit = off"))
        rows = session.execute(
            select(m.Change.id, m.Change.organization_id)
            .where(m.Change.published_at.is_(None))
            .order_by(m.Change.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        yield Claim(session, [(row[0], row[1]) for row in rows])


@contextmanager
def organization_lock(sessions: sessionmaker[Session], organization_id: str) -> Iterator[None]:
    """A session-level advisory lock on one organization, on its own connection: held across
    the Git write, and released by PostgreSQL if this process dies."""
    engine = sessions.kw["bind"]
    key = {"k": org_lock_key(organization_id)}
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), key)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
            conn.commit()


def snapshot(
    sessions: sessionmaker[Session],
    organization_id: str,
    *,
    issuer_url: str,
    vcluster_chart_version: str,
    vcluster_chart_repository: str = "https://charts.loft.sh",
) -> tuple[list[PendingChange], TenantSpec | None]:
    """Pending changes and the desired state, read in one REPEATABLE READ snapshot, so the
    state is exactly the one those changes produced. No spec when nothing is pending or the
    organization is gone."""
    with sessions() as session:
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
            issuer_url=issuer_url,
            vcluster_chart_version=vcluster_chart_version,
            vcluster_chart_repository=vcluster_chart_repository,
        )
        return pending, spec


def mark(
    sessions: sessionmaker[Session],
    ids: Sequence[int],
    state: str,
    *,
    sha: str | dict[str, str] | None = None,
    reason: str | None = None,
) -> None:
    """Settle pending changes (only those still pending: a mark is never applied twice)."""
    now = datetime.now(UTC)
    with sessions() as session, session.begin():
        if state == "committed":
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
                    committed_at=now if state == "committed" else None,
                    settled_at=None if state == "committed" else now,
                    attempts=m.Change.attempts + 1,
                )
            )


def stale_organizations(sessions: sessionmaker[Session], older_than: float) -> list[str]:
    """Organizations with a change published more than older_than seconds ago and still
    pending."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
    with sessions() as session:
        return list(
            session.scalars(
                select(m.Change.organization_id)
                .where(m.Change.state == "pending", m.Change.published_at < cutoff)
                .distinct()
            )
        )


def states(
    sessions: sessionmaker[Session], ids: Sequence[int]
) -> list[tuple[int, str, str | None]]:
    """(id, state, commit sha) of the given changes."""
    with sessions() as session:
        rows = session.execute(
            select(m.Change.id, m.Change.state, m.Change.commit_sha).where(m.Change.id.in_(ids))
        ).all()
        return [(r[0], r[1], r[2]) for r in rows]
