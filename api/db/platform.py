"""Read every Organization and Workspace as a PlatformSpec (for the platform renderer)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, sessionmaker

from api.db import models as m
from api.db.tenant import plan_spec
from reconciler import render
from reconciler import spec as s


def load_platform_spec(session: Session, *, git_base_url: str) -> s.PlatformSpec:
    """All organizations with their workspaces, in a stable order (by name)."""
    organizations = session.execute(
        select(m.Organization.id, m.Organization.name).order_by(m.Organization.name)
    ).all()
    workspaces: dict[str, list[s.PlatformWorkspaceSpec]] = defaultdict(list)
    for ws in session.scalars(
        select(m.Workspace).options(joinedload(m.Workspace.plan)).order_by(m.Workspace.name)
    ):
        workspaces[ws.organization_id].append(
            s.PlatformWorkspaceSpec(
                name=ws.name, reads_nodes=render.reads_nodes(plan_spec(ws.plan))
            )
        )
    return s.PlatformSpec(
        git_base_url=git_base_url,
        organizations=tuple(
            s.PlatformOrganizationSpec(id=org_id, name=name, workspaces=tuple(workspaces[org_id]))
            for org_id, name in organizations
        ),
    )


def read_platform_spec(sessions: sessionmaker[Session], *, git_base_url: str) -> s.PlatformSpec:
    """load_platform_spec in one REPEATABLE READ snapshot of its own."""
    with sessions() as session:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return load_platform_spec(session, git_base_url=git_base_url)
