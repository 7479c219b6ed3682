"""Workspaces (one vCluster each), their groups and their role bindings."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import models as m
from api.db.access import (
    ADMIN_GROUP,
    ROOT_GROUP,
    USER_GROUP,
    Access,
    organization_for,
    workspace_access,
    workspace_for,
)
from api.db.changes import change_public, record_change
from api.deps import Context, ContextDep, CurrentUser, SessionDep
from api.errors import Invalid, NotFound
from api.routes.organizations import user_by_email
from api.schemas import (
    Changed,
    ChangePublic,
    GroupCreate,
    GroupMemberCreate,
    GroupPublic,
    GroupUpdate,
    RoleBindingCreate,
    RoleBindingPublic,
    WorkspaceCreate,
    WorkspacePublic,
    WorkspaceUpdate,
)

router = APIRouter(prefix="/api/v1/organizations/{org}/workspaces", tags=["workspaces"])
BUILT_IN_GROUPS = (ROOT_GROUP, ADMIN_GROUP, USER_GROUP)


def workspace_public(ws: m.Workspace) -> WorkspacePublic:
    return WorkspacePublic(
        id=ws.id, name=ws.name, plan=ws.plan.name, state=ws.state, created_at=ws.created_at
    )


def change_for(
    db: Session, ctx: Context, ws: m.Workspace, action: str, target: str
) -> ChangePublic:
    change = record_change(
        db,
        organization_id=ws.organization_id,
        actor=ctx.user,
        action=action,
        target=target,
        request_id=ctx.request_id,
    )
    return change_public(change)


def plan_named(db: Session, name: str) -> m.Plan:
    plan = db.scalars(select(m.Plan).where(m.Plan.name == name)).first()
    if plan is None:
        known = ", ".join(db.scalars(select(m.Plan.name).order_by(m.Plan.name)))
        raise Invalid("plan", f"unknown plan {name!r}: must be one of {known}")
    return plan


@router.post("", status_code=201)
def create_workspace(
    org: str, body: WorkspaceCreate, db: SessionDep, ctx: ContextDep
) -> Changed[WorkspacePublic]:
    with db.begin():
        organization = organization_for(db, ctx.user, org, lock=True)
        plan = plan_named(db, body.plan)
        exists = db.scalar(
            select(m.Workspace.id).where(
                m.Workspace.organization_id == organization.id, m.Workspace.name == body.name
            )
        )
        if exists:
            raise Invalid("name", f"a workspace named {body.name!r} already exists in {org!r}")
        ws = m.Workspace(organization_id=organization.id, name=body.name, plan=plan)
        db.add(ws)
        db.flush()
        root = m.Group(workspace_id=ws.id, name=ROOT_GROUP)
        db.add(root)
        db.flush()
        admins = m.Group(workspace_id=ws.id, name=ADMIN_GROUP, parent_id=root.id)
        db.add_all([admins, m.Group(workspace_id=ws.id, name=USER_GROUP, parent_id=root.id)])
        db.flush()
        db.add(m.GroupMember(group_id=admins.id, user_id=ctx.user.id))
        change = change_for(db, ctx, ws, "workspace.create", f"{org}/{ws.name}")
    ctx.committed()
    return Changed(resource=workspace_public(ws), change=change)


@router.get("")
def list_workspaces(org: str, db: SessionDep, user: CurrentUser) -> list[WorkspacePublic]:
    rows = db.scalars(
        select(m.Workspace)
        .join(m.Organization)
        .where(m.Organization.name == org)
        .order_by(m.Workspace.name)
    ).all()
    visible = [ws for ws in rows if workspace_access(db, user, ws) > Access.NONE]
    if not visible:
        organization_for(db, user, org)  # 404 unless an organization user
    return [workspace_public(ws) for ws in visible]


@router.get("/{ws}")
def get_workspace(org: str, ws: str, db: SessionDep, user: CurrentUser) -> WorkspacePublic:
    return workspace_public(workspace_for(db, user, org, ws, Access.READ))


@router.patch("/{ws}")
def update_workspace(
    org: str, ws: str, body: WorkspaceUpdate, db: SessionDep, ctx: ContextDep
) -> Changed[WorkspacePublic]:
    with db.begin():
        organization_for(db, ctx.user, org, lock=True)  # the plan is the organization's call
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE)
        workspace.plan = plan_named(db, body.plan)
        change = change_for(db, ctx, workspace, "workspace.update", f"{org}/{ws}")
    ctx.committed()
    return Changed(resource=workspace_public(workspace), change=change)


@router.delete("/{ws}")
def delete_workspace(
    org: str, ws: str, db: SessionDep, ctx: ContextDep
) -> Changed[WorkspacePublic]:
    with db.begin():
        organization_for(db, ctx.user, org, lock=True)
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE)
        change = change_for(db, ctx, workspace, "workspace.delete", f"{org}/{ws}")
        # The row stays, `deleting`, until the status watcher sees Flux remove the vCluster;
        # it is no longer rendered, so this commit removes the workspace from the repository.
        workspace.state = "deleting"
        workspace.state_reason = None
        public = workspace_public(workspace)
    ctx.committed()
    return Changed(resource=public, change=change)


# -- groups -------------------------------------------------------------------------------


def groups_of(db: Session, ws: m.Workspace) -> dict[str, m.Group]:
    return {g.name: g for g in db.scalars(select(m.Group).where(m.Group.workspace_id == ws.id))}


def group_named(groups: dict[str, m.Group], name: str, where: str) -> m.Group:
    group = groups.get(name)
    if group is None:
        raise NotFound(f"group {name!r} in {where}")
    return group


def group_public(db: Session, group: m.Group, by_id: dict[str, m.Group]) -> GroupPublic:
    members = db.scalars(
        select(m.User.email).join(m.GroupMember).where(m.GroupMember.group_id == group.id)
    )
    parent = by_id[group.parent_id].name if group.parent_id else None
    return GroupPublic(id=group.id, name=group.name, parent=parent, members=sorted(members))


def would_cycle(group: m.Group, new_parent: m.Group, by_id: dict[str, m.Group]) -> bool:
    current: m.Group | None = new_parent
    while current is not None:
        if current.id == group.id:
            return True
        current = by_id.get(current.parent_id) if current.parent_id else None
    return False


@router.get("/{ws}/groups")
def list_groups(org: str, ws: str, db: SessionDep, user: CurrentUser) -> list[GroupPublic]:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    groups = groups_of(db, workspace)
    by_id = {g.id: g for g in groups.values()}
    return [group_public(db, g, by_id) for _, g in sorted(groups.items())]


@router.post("/{ws}/groups", status_code=201)
def create_group(
    org: str, ws: str, body: GroupCreate, db: SessionDep, ctx: ContextDep
) -> Changed[GroupPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        groups = groups_of(db, workspace)
        if body.name in groups:
            raise Invalid("name", f"a group named {body.name!r} already exists in {org}/{ws}")
        parent = groups.get(body.parent)
        if parent is None:
            raise Invalid("parent", f"no group named {body.parent!r} in {org}/{ws}")
        group = m.Group(workspace_id=workspace.id, name=body.name, parent_id=parent.id)
        db.add(group)
        db.flush()
        by_id = {g.id: g for g in [*groups.values(), group]}
        change = change_for(db, ctx, workspace, "group.create", f"{org}/{ws}/{body.name}")
        public = group_public(db, group, by_id)
    ctx.committed()
    return Changed(resource=public, change=change)


@router.patch("/{ws}/groups/{name}")
def update_group(
    org: str, ws: str, name: str, body: GroupUpdate, db: SessionDep, ctx: ContextDep
) -> Changed[GroupPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        groups = groups_of(db, workspace)
        group = group_named(groups, name, f"{org}/{ws}")
        if name in BUILT_IN_GROUPS:
            raise Invalid("parent", f"{name} is built in; its place in the tree is fixed")
        parent = groups.get(body.parent)
        if parent is None:
            raise Invalid("parent", f"no group named {body.parent!r} in {org}/{ws}")
        by_id = {g.id: g for g in groups.values()}
        if would_cycle(group, parent, by_id):
            raise Invalid("parent", f"{body.parent!r} is {name!r} or inside it: groups form a tree")
        group.parent_id = parent.id
        change = change_for(db, ctx, workspace, "group.update", f"{org}/{ws}/{name}")
        public = group_public(db, group, by_id)
    ctx.committed()
    return Changed(resource=public, change=change)


@router.delete("/{ws}/groups/{name}")
def delete_group(
    org: str, ws: str, name: str, db: SessionDep, ctx: ContextDep
) -> Changed[GroupPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        groups = groups_of(db, workspace)
        group = group_named(groups, name, f"{org}/{ws}")
        if name in BUILT_IN_GROUPS:
            raise Invalid("name", f"{name} is built in and cannot be deleted")
        public = group_public(db, group, {g.id: g for g in groups.values()})
        change = change_for(db, ctx, workspace, "group.delete", f"{org}/{ws}/{name}")
        db.delete(group)  # child groups and bindings go with it (ON DELETE CASCADE)
    ctx.committed()
    return Changed(resource=public, change=change)


@router.post("/{ws}/groups/{name}/members", status_code=201)
def add_group_member(
    org: str, ws: str, name: str, body: GroupMemberCreate, db: SessionDep, ctx: ContextDep
) -> Changed[GroupPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        groups = groups_of(db, workspace)
        group = group_named(groups, name, f"{org}/{ws}")
        member = user_by_email(db, body.email)
        if db.get(m.GroupMember, {"group_id": group.id, "user_id": member.id}):
            raise Invalid("email", f"{body.email} is already in {name}")
        db.add(m.GroupMember(group_id=group.id, user_id=member.id))
        db.flush()
        change = change_for(
            db, ctx, workspace, "group.member.add", f"{org}/{ws}/{name}/{member.email}"
        )
        public = group_public(db, group, {g.id: g for g in groups.values()})
    ctx.committed()
    return Changed(resource=public, change=change)


@router.delete("/{ws}/groups/{name}/members/{email}")
def remove_group_member(
    org: str, ws: str, name: str, email: str, db: SessionDep, ctx: ContextDep
) -> Changed[GroupPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        groups = groups_of(db, workspace)
        group = group_named(groups, name, f"{org}/{ws}")
        row = db.scalars(
            select(m.GroupMember)
            .join(m.User)
            .where(m.GroupMember.group_id == group.id, m.User.email == email.lower())
        ).first()
        if row is None:
            raise NotFound(f"{email} in group {name!r}")
        db.delete(row)
        db.flush()
        change = change_for(db, ctx, workspace, "group.member.remove", f"{org}/{ws}/{name}/{email}")
        public = group_public(db, group, {g.id: g for g in groups.values()})
    ctx.committed()
    return Changed(resource=public, change=change)


# -- role bindings ------------------------------------------------------------------------


def binding_public(db: Session, b: m.RoleBinding) -> RoleBindingPublic:
    project = db.get(m.Project, b.project_id) if b.project_id else None
    return RoleBindingPublic(
        id=b.id,
        name=b.name,
        group=b.group.name,
        project=project.name if project else None,
        cluster_role=b.cluster_role,
        project_role=b.project_role.name if b.project_role else None,
    )


@router.get("/{ws}/rolebindings")
def list_bindings(org: str, ws: str, db: SessionDep, user: CurrentUser) -> list[RoleBindingPublic]:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    rows = db.scalars(
        select(m.RoleBinding)
        .where(m.RoleBinding.workspace_id == workspace.id)
        .order_by(m.RoleBinding.name)
    )
    return [binding_public(db, b) for b in rows]


@router.post("/{ws}/rolebindings", status_code=201)
def create_binding(
    org: str, ws: str, body: RoleBindingCreate, db: SessionDep, ctx: ContextDep
) -> Changed[RoleBindingPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        exists = db.scalar(
            select(m.RoleBinding.id).where(
                m.RoleBinding.workspace_id == workspace.id, m.RoleBinding.name == body.name
            )
        )
        if exists:
            raise Invalid(
                "name", f"a role binding named {body.name!r} already exists in {org}/{ws}"
            )
        group = groups_of(db, workspace).get(body.group)
        if group is None:
            raise Invalid("group", f"no group named {body.group!r} in {org}/{ws}")
        project: m.Project | None = None
        if body.project is not None:
            project = db.scalars(
                select(m.Project).where(
                    m.Project.workspace_id == workspace.id, m.Project.name == body.project
                )
            ).first()
            if project is None:
                raise Invalid("project", f"no project named {body.project!r} in {org}/{ws}")
        role: m.ProjectRole | None = None
        if body.project_role is not None:
            assert project is not None
            role = db.scalars(
                select(m.ProjectRole).where(
                    m.ProjectRole.project_id == project.id, m.ProjectRole.name == body.project_role
                )
            ).first()
            if role is None:
                raise Invalid(
                    "project_role",
                    f"no role named {body.project_role!r} in project {body.project!r}",
                )
        same = db.scalar(
            select(m.RoleBinding.name).where(
                m.RoleBinding.workspace_id == workspace.id,
                m.RoleBinding.group_id == group.id,
                m.RoleBinding.project_id == (project.id if project else None),
                m.RoleBinding.cluster_role == body.cluster_role,
                m.RoleBinding.project_role_id == (role.id if role else None),
            )
        )
        if same:
            raise Invalid("group", f"role binding {same!r} already grants {body.group} that role")
        binding = m.RoleBinding(
            workspace_id=workspace.id,
            name=body.name,
            group=group,
            project_id=project.id if project else None,
            cluster_role=body.cluster_role,
            project_role=role,
        )
        db.add(binding)
        db.flush()
        change = change_for(db, ctx, workspace, "rolebinding.create", f"{org}/{ws}/{body.name}")
        public = binding_public(db, binding)
    ctx.committed()
    return Changed(resource=public, change=change)


@router.delete("/{ws}/rolebindings/{name}")
def delete_binding(
    org: str, ws: str, name: str, db: SessionDep, ctx: ContextDep
) -> Changed[RoleBindingPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        binding = db.scalars(
            select(m.RoleBinding).where(
                m.RoleBinding.workspace_id == workspace.id, m.RoleBinding.name == name
            )
        ).first()
        if binding is None:
            raise NotFound(f"role binding {name!r} in {org}/{ws}")
        public = binding_public(db, binding)
        change = change_for(db, ctx, workspace, "rolebinding.delete", f"{org}/{ws}/{name}")
        db.delete(binding)
    ctx.committed()
    return Changed(resource=public, change=change)
