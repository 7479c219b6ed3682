"""Who may do what: organization users manage their organization and its workspaces;
WSAdmins manage what is inside a workspace; other workspace members read.

Anything a user may not see answers 404, so another organization's names do not leak.
"""

from __future__ import annotations

import enum

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import models as m
from api.errors import Conflict, Forbidden, NotFound

ROOT_GROUP = "WorkspaceMembers"
ADMIN_GROUP = "WSAdmins"
USER_GROUP = "WSUsers"


class Access(enum.IntEnum):
    NONE = 0
    READ = 1
    MANAGE = 2


def organization_for(
    session: Session, user: m.User, org_name: str, *, lock: bool = False
) -> m.Organization:
    """The organization if the user is one of its users; 404 otherwise. lock=True takes the
    row lock that orders this organization's changes."""
    stmt = (
        select(m.Organization)
        .join(m.OrganizationMember)
        .where(m.Organization.name == org_name, m.OrganizationMember.user_id == user.id)
    )
    if lock:
        stmt = stmt.with_for_update(of=m.Organization)
    org = session.scalars(stmt).first()
    if org is None:
        raise NotFound(f"organization {org_name!r}")
    return org


def is_org_user(session: Session, user: m.User, org_id: str) -> bool:
    return (
        session.get(m.OrganizationMember, {"organization_id": org_id, "user_id": user.id})
        is not None
    )


def effective_groups(session: Session, user: m.User, workspace_id: str) -> set[str]:
    """The user's groups in a workspace, flattened up the hierarchy (a member of a child
    group is a member of every ancestor), as the OIDC token will carry them."""
    groups = session.scalars(select(m.Group).where(m.Group.workspace_id == workspace_id)).all()
    by_id = {g.id: g for g in groups}
    direct = session.scalars(
        select(m.GroupMember.group_id)
        .join(m.Group)
        .where(m.Group.workspace_id == workspace_id, m.GroupMember.user_id == user.id)
    ).all()
    names: set[str] = set()
    for group_id in direct:
        current: m.Group | None = by_id.get(group_id)
        while current is not None and current.name not in names:
            names.add(current.name)
            current = by_id.get(current.parent_id) if current.parent_id else None
    return names


def workspace_access(session: Session, user: m.User, workspace: m.Workspace) -> Access:
    if is_org_user(session, user, workspace.organization_id):
        return Access.MANAGE
    groups = effective_groups(session, user, workspace.id)
    if ADMIN_GROUP in groups:
        return Access.MANAGE
    if groups:
        return Access.READ
    return Access.NONE


def workspace_for(
    session: Session,
    user: m.User,
    org_name: str,
    ws_name: str,
    need: Access,
    *,
    lock: bool = False,
) -> m.Workspace:
    """The workspace if the user may see it (else 404) and do `need` in it (else 403).
    lock=True locks the organization row, ordering this organization's changes."""
    row = session.execute(
        select(m.Workspace, m.Organization)
        .join(m.Organization)
        .where(m.Organization.name == org_name, m.Workspace.name == ws_name)
    ).first()
    if row is None:
        raise NotFound(f"workspace {org_name}/{ws_name}")
    workspace, org = row
    access = workspace_access(session, user, workspace)
    if access == Access.NONE:
        raise NotFound(f"workspace {org_name}/{ws_name}")
    if access < need:
        raise Forbidden(f"only WSAdmins of {org_name}/{ws_name} may change it")
    if need == Access.MANAGE and workspace.state == "deleting":
        raise Conflict(f"workspace {org_name}/{ws_name} is being deleted")
    if lock:
        session.execute(
            select(m.Organization.id).where(m.Organization.id == org.id).with_for_update()
        )
    return workspace
