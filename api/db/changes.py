"""Change rows: the outbox and the audit record of every mutation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import models as m
from api.schemas import ChangePublic, Step


def record_change(
    session: Session,
    *,
    organization_id: str,
    actor: m.User,
    action: str,
    target: str,
    request_id: str,
) -> m.Change:
    """Add the change in the caller's transaction, so it commits with the mutation or not at all."""
    change = m.Change(
        organization_id=organization_id,
        actor_id=actor.id,
        actor_name=actor.name or actor.email,
        actor_email=actor.email,
        action=action,
        target=target,
        request_id=request_id,
        state="pending",
    )
    session.add(change)
    session.flush()  # assigns the id inside the transaction
    return change


def change_public(change: m.Change, *, history: list[Step] | None = None) -> ChangePublic:
    return ChangePublic(
        id=change.id,
        state=change.state,
        action=change.action,
        target=change.target,
        actor=change.actor_email,
        request_id=change.request_id,
        commit_sha=change.commit_sha,
        reason=change.reason,
        created_at=change.created_at,
        committed_at=change.committed_at,
        settled_at=change.settled_at,
        raw_status=change.raw_status,
        link=f"/api/v1/changes/{change.id}",
        history=history or [],
    )


def lifecycle(session: Session, change: m.Change) -> list[Step]:
    """pending and committed from the change row, then every transition the status watcher
    recorded (applied, failed, and applied again after a fix)."""
    steps = [Step(state="pending", at=change.created_at)]
    if change.committed_at is not None:
        steps.append(Step(state="committed", at=change.committed_at))
    events = session.scalars(
        select(m.StateEvent)
        .where(m.StateEvent.entity == "change", m.StateEvent.entity_id == str(change.id))
        .order_by(m.StateEvent.id)
    )
    steps.extend(Step(state=e.state, at=e.recorded_at, reason=e.reason) for e in events)
    return steps
