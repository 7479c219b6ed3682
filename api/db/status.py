"""What the status watcher reads and writes: current states, and transitions with history.

A transition is written only when the state really changes (the UPDATE's WHERE says so),
so replaying the same Flux status after a restart writes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from api.db import models as m
from api.db.session import org_lock_key


@dataclass(frozen=True)
class Transition:
    organization_id: str
    entity: str  # workspace | project | change
    entity_id: str
    state: str
    reason: str | None = None
    raw: str | None = None
    observed_at: datetime | None = None


@dataclass(frozen=True)
class WorkspaceRow:
    id: str
    name: str
    state: str


@dataclass(frozen=True)
class ProjectRow:
    id: str
    workspace: str
    name: str
    state: str


@dataclass(frozen=True)
class ChangeRow:
    id: int
    action: str
    target: str
    commit_sha: str
    state: str


@dataclass(frozen=True)
class OrganizationStatus:
    id: str
    name: str
    workspaces: list[WorkspaceRow]
    projects: list[ProjectRow]
    changes: list[ChangeRow]  # committed or failed: still waiting for an outcome


def organization_status(
    sessions: sessionmaker[Session], org_name: str
) -> OrganizationStatus | None:
    with sessions() as session:
        org = session.scalars(select(m.Organization).where(m.Organization.name == org_name)).first()
        if org is None:
            return None
        workspaces = session.scalars(
            select(m.Workspace).where(m.Workspace.organization_id == org.id)
        ).all()
        names = {w.id: w.name for w in workspaces}
        projects = session.scalars(
            select(m.Project).where(m.Project.workspace_id.in_(list(names)))
        ).all()
        changes = session.scalars(
            select(m.Change)
            .where(
                m.Change.organization_id == org.id,
                m.Change.state.in_(("committed", "failed")),
                m.Change.commit_sha.is_not(None),
            )
            .order_by(m.Change.id)
        ).all()
        return OrganizationStatus(
            id=org.id,
            name=org.name,
            workspaces=[WorkspaceRow(w.id, w.name, w.state) for w in workspaces],
            projects=[ProjectRow(p.id, names[p.workspace_id], p.name, p.state) for p in projects],
            changes=[
                ChangeRow(c.id, c.action, c.target, c.commit_sha or "", c.state) for c in changes
            ],
        )


def record(sessions: sessionmaker[Session], transitions: list[Transition]) -> list[Transition]:
    """Apply the transitions that are real (the row's state differs) and log them in the
    history, in one transaction; returns those that were written."""
    written: list[Transition] = []
    now = datetime.now(UTC)
    with sessions() as session, session.begin():
        for t in transitions:
            if _apply(session, t, now):
                session.add(
                    m.StateEvent(
                        organization_id=t.organization_id,
                        entity=t.entity,
                        entity_id=t.entity_id,
                        state=t.state,
                        reason=t.reason,
                        raw=t.raw,
                        observed_at=t.observed_at,
                        recorded_at=now,
                    )
                )
                written.append(t)
    return written


def _apply(session: Session, t: Transition, now: datetime) -> bool:
    """Update the row if its state really changes; whether it did."""
    if t.entity == "workspace" and t.state == "deleted":
        return _purge_workspace(session, t.entity_id)
    if t.entity == "change":
        statement = (
            update(m.Change)
            .where(m.Change.id == int(t.entity_id), m.Change.state != t.state)
            .values(state=t.state, reason=t.reason, raw_status=t.raw, settled_at=now)
        )
    else:
        model = m.Workspace if t.entity == "workspace" else m.Project
        statement = (
            update(model)
            .where(model.id == t.entity_id, model.state != t.state)
            .values(state=t.state, state_reason=t.reason)
        )
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def _purge_workspace(session: Session, workspace_id: str) -> bool:
    """Flux has removed a deleted workspace's vCluster: drop the row (its projects, groups and
    bindings go with it) and record a change, so the worker re-renders the platform
    repository without the workspace's namespace."""
    workspace = session.get(m.Workspace, workspace_id)
    if workspace is None or workspace.state != "deleting":
        return False
    org = session.get_one(m.Organization, workspace.organization_id)
    session.add(
        m.Change(
            organization_id=workspace.organization_id,
            actor_id=None,
            actor_name="Hexabase",
            actor_email="hexabase@localhost",
            action="workspace.purge",
            target=f"{org.name}/{workspace.name}",
            request_id="status-watcher",
            state="pending",
        )
    )
    session.delete(workspace)
    return True


def history(sessions: sessionmaker[Session], entity: str, entity_id: str) -> list[m.StateEvent]:
    with sessions() as session:
        return list(
            session.scalars(
                select(m.StateEvent)
                .where(m.StateEvent.entity == entity, m.StateEvent.entity_id == entity_id)
                .order_by(m.StateEvent.id)
            )
        )


@contextmanager
def leader(sessions: sessionmaker[Session], name: str) -> Iterator[Callable[[], bool]]:
    """A session-level advisory lock held on its own connection for as long as the block
    runs. Yields `try_acquire()`: True once this process is the leader. When the process
    dies, PostgreSQL ends the session and a standby's next try succeeds."""
    engine = sessions.kw["bind"]
    key = {"k": org_lock_key(f"leader:{name}")}
    with engine.connect() as conn:
        held = False

        def try_acquire() -> bool:
            nonlocal held
            if not held:
                held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), key).scalar())
                conn.commit()
            return held

        try:
            yield try_acquire
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
                conn.commit()


def organizations_waiting(sessions: sessionmaker[Session]) -> list[str]:
    """Names of organizations with a committed change not yet applied or failed."""
    with sessions() as session:
        return list(
            session.scalars(
                select(m.Organization.name)
                .join(m.Change, m.Change.organization_id == m.Organization.id)
                .where(m.Change.state == "committed")
                .distinct()
            )
        )
