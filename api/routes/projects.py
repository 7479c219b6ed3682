"""Projects (Namespaces inside a workspace) and what lives in them: roles, CronJobs, Functions."""

from __future__ import annotations

from typing import TypeVar

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import models as m
from api.db.access import Access, workspace_for
from api.deps import ContextDep, CurrentUser, SessionDep
from api.errors import Invalid, NotFound
from api.routes.workspaces import change_for
from api.schemas import (
    Changed,
    CronJobCreate,
    CronJobPublic,
    CronJobUpdate,
    FunctionCreate,
    FunctionPublic,
    FunctionUpdate,
    ProjectCreate,
    ProjectPublic,
    ProjectRoleCreate,
    ProjectRolePublic,
    ProjectRoleUpdate,
    ProjectUpdate,
)

router = APIRouter(prefix="/api/v1/organizations/{org}/workspaces/{ws}/projects", tags=["projects"])


def project_public(p: m.Project) -> ProjectPublic:
    return ProjectPublic(
        id=p.id, name=p.name, quota=p.quota, limit_range=p.limit_range, created_at=p.created_at
    )


def project_in(db: Session, ws: m.Workspace, name: str) -> m.Project:
    project = db.scalars(
        select(m.Project).where(m.Project.workspace_id == ws.id, m.Project.name == name)
    ).first()
    if project is None:
        raise NotFound(f"project {name!r}")
    return project


# What lives inside a project: each has a project_id and a name unique in its project.
Child = TypeVar("Child", m.ProjectRole, m.CronJob, m.Function)


def children_of(db: Session, model: type[Child], project: m.Project) -> list[Child]:
    return list(
        db.scalars(select(model).where(model.project_id == project.id).order_by(model.name))
    )


def child_in(db: Session, model: type[Child], project: m.Project, name: str, what: str) -> Child:
    row = db.scalars(
        select(model).where(model.project_id == project.id, model.name == name)
    ).first()
    if row is None:
        raise NotFound(f"{what} {name!r} in project {project.name!r}")
    return row


def refuse_taken(db: Session, model: type[Child], project: m.Project, name: str, what: str) -> None:
    taken = db.scalar(select(model.id).where(model.project_id == project.id, model.name == name))
    if taken:
        raise Invalid("name", f"a {what} named {name!r} already exists in project {project.name!r}")


@router.get("")
def list_projects(org: str, ws: str, db: SessionDep, user: CurrentUser) -> list[ProjectPublic]:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    rows = db.scalars(
        select(m.Project).where(m.Project.workspace_id == workspace.id).order_by(m.Project.name)
    )
    return [project_public(p) for p in rows]


@router.post("", status_code=201)
def create_project(
    org: str, ws: str, body: ProjectCreate, db: SessionDep, ctx: ContextDep
) -> Changed[ProjectPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        exists = db.scalar(
            select(m.Project.id).where(
                m.Project.workspace_id == workspace.id, m.Project.name == body.name
            )
        )
        if exists:
            raise Invalid("name", f"a project named {body.name!r} already exists in {org}/{ws}")
        project = m.Project(
            workspace_id=workspace.id,
            name=body.name,
            quota={str(k): v for k, v in body.quota.items()},
            limit_range=body.limit_range.model_dump() if body.limit_range else None,
        )
        db.add(project)
        db.flush()
        change = change_for(db, ctx, workspace, "project.create", f"{org}/{ws}/{body.name}")
    ctx.committed()
    return Changed(resource=project_public(project), change=change)


@router.get("/{project}")
def get_project(
    org: str, ws: str, project: str, db: SessionDep, user: CurrentUser
) -> ProjectPublic:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    return project_public(project_in(db, workspace, project))


@router.patch("/{project}")
def update_project(
    org: str, ws: str, project: str, body: ProjectUpdate, db: SessionDep, ctx: ContextDep
) -> Changed[ProjectPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        row = project_in(db, workspace, project)
        if body.quota is not None:
            row.quota = {str(k): v for k, v in body.quota.items()}
        if "limit_range" in body.model_fields_set:
            row.limit_range = body.limit_range.model_dump() if body.limit_range else None
        change = change_for(db, ctx, workspace, "project.update", f"{org}/{ws}/{project}")
    ctx.committed()
    return Changed(resource=project_public(row), change=change)


@router.delete("/{project}")
def delete_project(
    org: str, ws: str, project: str, db: SessionDep, ctx: ContextDep
) -> Changed[ProjectPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        row = project_in(db, workspace, project)
        public = project_public(row)
        change = change_for(db, ctx, workspace, "project.delete", f"{org}/{ws}/{project}")
        db.delete(row)
    ctx.committed()
    return Changed(resource=public, change=change)


# -- project roles ------------------------------------------------------------------------


def role_public(r: m.ProjectRole) -> ProjectRolePublic:
    return ProjectRolePublic(id=r.id, name=r.name, rules=r.rules)


@router.get("/{project}/roles")
def list_roles(
    org: str, ws: str, project: str, db: SessionDep, user: CurrentUser
) -> list[ProjectRolePublic]:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    roles = children_of(db, m.ProjectRole, project_in(db, workspace, project))
    return [role_public(r) for r in roles]


@router.post("/{project}/roles", status_code=201)
def create_role(
    org: str, ws: str, project: str, body: ProjectRoleCreate, db: SessionDep, ctx: ContextDep
) -> Changed[ProjectRolePublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        row = project_in(db, workspace, project)
        refuse_taken(db, m.ProjectRole, row, body.name, "role")
        role = m.ProjectRole(
            project_id=row.id, name=body.name, rules=[r.model_dump() for r in body.rules]
        )
        db.add(role)
        db.flush()
        change = change_for(db, ctx, workspace, "role.create", f"{org}/{ws}/{project}/{body.name}")
    ctx.committed()
    return Changed(resource=role_public(role), change=change)


@router.get("/{project}/roles/{name}")
def get_role(
    org: str, ws: str, project: str, name: str, db: SessionDep, user: CurrentUser
) -> ProjectRolePublic:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    return role_public(
        child_in(db, m.ProjectRole, project_in(db, workspace, project), name, "role")
    )


@router.put("/{project}/roles/{name}")
def update_role(
    org: str,
    ws: str,
    project: str,
    name: str,
    body: ProjectRoleUpdate,
    db: SessionDep,
    ctx: ContextDep,
) -> Changed[ProjectRolePublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        role = child_in(db, m.ProjectRole, project_in(db, workspace, project), name, "role")
        role.rules = [r.model_dump() for r in body.rules]
        change = change_for(db, ctx, workspace, "role.update", f"{org}/{ws}/{project}/{name}")
    ctx.committed()
    return Changed(resource=role_public(role), change=change)


@router.delete("/{project}/roles/{name}")
def delete_role(
    org: str, ws: str, project: str, name: str, db: SessionDep, ctx: ContextDep
) -> Changed[ProjectRolePublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        role = child_in(db, m.ProjectRole, project_in(db, workspace, project), name, "role")
        public = role_public(role)
        change = change_for(db, ctx, workspace, "role.delete", f"{org}/{ws}/{project}/{name}")
        db.delete(role)  # its bindings go with it
    ctx.committed()
    return Changed(resource=public, change=change)


# -- CronJobs -----------------------------------------------------------------------------


@router.get("/{project}/cronjobs")
def list_cronjobs(
    org: str, ws: str, project: str, db: SessionDep, user: CurrentUser
) -> list[CronJobPublic]:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    rows = children_of(db, m.CronJob, project_in(db, workspace, project))
    return [CronJobPublic.model_validate(c) for c in rows]


@router.post("/{project}/cronjobs", status_code=201)
def create_cronjob(
    org: str, ws: str, project: str, body: CronJobCreate, db: SessionDep, ctx: ContextDep
) -> Changed[CronJobPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        row = project_in(db, workspace, project)
        refuse_taken(db, m.CronJob, row, body.name, "cronjob")
        data = body.model_dump()
        cronjob = m.CronJob(project_id=row.id, **data)
        db.add(cronjob)
        db.flush()
        change = change_for(
            db, ctx, workspace, "cronjob.create", f"{org}/{ws}/{project}/{body.name}"
        )
    ctx.committed()
    return Changed(resource=CronJobPublic.model_validate(cronjob), change=change)


@router.get("/{project}/cronjobs/{name}")
def get_cronjob(
    org: str, ws: str, project: str, name: str, db: SessionDep, user: CurrentUser
) -> CronJobPublic:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    row = child_in(db, m.CronJob, project_in(db, workspace, project), name, "cronjob")
    return CronJobPublic.model_validate(row)


@router.patch("/{project}/cronjobs/{name}")
def update_cronjob(
    org: str, ws: str, project: str, name: str, body: CronJobUpdate, db: SessionDep, ctx: ContextDep
) -> Changed[CronJobPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        cronjob = child_in(db, m.CronJob, project_in(db, workspace, project), name, "cronjob")
        for field, value in body.model_dump(exclude_unset=True).items():
            if value is None:
                raise Invalid(field, f"{field} cannot be null")
            setattr(cronjob, field, value)
        change = change_for(db, ctx, workspace, "cronjob.update", f"{org}/{ws}/{project}/{name}")
    ctx.committed()
    return Changed(resource=CronJobPublic.model_validate(cronjob), change=change)


@router.delete("/{project}/cronjobs/{name}")
def delete_cronjob(
    org: str, ws: str, project: str, name: str, db: SessionDep, ctx: ContextDep
) -> Changed[CronJobPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        cronjob = child_in(db, m.CronJob, project_in(db, workspace, project), name, "cronjob")
        public = CronJobPublic.model_validate(cronjob)
        change = change_for(db, ctx, workspace, "cronjob.delete", f"{org}/{ws}/{project}/{name}")
        db.delete(cronjob)
    ctx.committed()
    return Changed(resource=public, change=change)


# -- Functions ----------------------------------------------------------------------------


@router.get("/{project}/functions")
def list_functions(
    org: str, ws: str, project: str, db: SessionDep, user: CurrentUser
) -> list[FunctionPublic]:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    rows = children_of(db, m.Function, project_in(db, workspace, project))
    return [FunctionPublic.model_validate(f) for f in rows]


@router.post("/{project}/functions", status_code=201)
def create_function(
    org: str, ws: str, project: str, body: FunctionCreate, db: SessionDep, ctx: ContextDep
) -> Changed[FunctionPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        row = project_in(db, workspace, project)
        refuse_taken(db, m.Function, row, body.name, "function")
        function = m.Function(project_id=row.id, **body.model_dump())
        db.add(function)
        db.flush()
        change = change_for(
            db, ctx, workspace, "function.create", f"{org}/{ws}/{project}/{body.name}"
        )
    ctx.committed()
    return Changed(resource=FunctionPublic.model_validate(function), change=change)


@router.get("/{project}/functions/{name}")
def get_function(
    org: str, ws: str, project: str, name: str, db: SessionDep, user: CurrentUser
) -> FunctionPublic:
    workspace = workspace_for(db, user, org, ws, Access.READ)
    row = child_in(db, m.Function, project_in(db, workspace, project), name, "function")
    return FunctionPublic.model_validate(row)


@router.patch("/{project}/functions/{name}")
def update_function(
    org: str,
    ws: str,
    project: str,
    name: str,
    body: FunctionUpdate,
    db: SessionDep,
    ctx: ContextDep,
) -> Changed[FunctionPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        function = child_in(db, m.Function, project_in(db, workspace, project), name, "function")
        for field, value in body.model_dump(exclude_unset=True).items():
            if value is None and field not in ("port", "concurrency"):
                raise Invalid(field, f"{field} cannot be null")
            setattr(function, field, value)
        if function.min_scale > function.max_scale:
            raise Invalid("min_scale", "min_scale must not exceed max_scale")
        change = change_for(db, ctx, workspace, "function.update", f"{org}/{ws}/{project}/{name}")
    ctx.committed()
    return Changed(resource=FunctionPublic.model_validate(function), change=change)


@router.delete("/{project}/functions/{name}")
def delete_function(
    org: str, ws: str, project: str, name: str, db: SessionDep, ctx: ContextDep
) -> Changed[FunctionPublic]:
    with db.begin():
        workspace = workspace_for(db, ctx.user, org, ws, Access.MANAGE, lock=True)
        function = child_in(db, m.Function, project_in(db, workspace, project), name, "function")
        public = FunctionPublic.model_validate(function)
        change = change_for(db, ctx, workspace, "function.delete", f"{org}/{ws}/{project}/{name}")
        db.delete(function)
    ctx.committed()
    return Changed(resource=public, change=change)
