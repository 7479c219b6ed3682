"""Read an Organization's desired state from the database as a TenantSpec (for the renderer)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import models as m
from reconciler import spec as s


def plan_spec(plan: m.Plan) -> s.PlanSpec:
    return s.PlanSpec(
        name=plan.name,
        quota=plan.quota,
        limit_range=s.LimitRangeSpec(**plan.limit_range),
        node_selector=plan.node_selector,
        tolerations=tuple(s.Toleration(**t) for t in plan.tolerations),
        allowed_registries=tuple(plan.allowed_registries),
    )


def _env(items: list[dict[str, str]]) -> tuple[s.EnvVar, ...]:
    return tuple(s.EnvVar(name=e["name"], value=e["value"]) for e in items)


def _limit_range(data: dict[str, Any] | None) -> s.LimitRangeSpec | None:
    return None if data is None else s.LimitRangeSpec(**data)


def load_tenant_spec(
    session: Session,
    organization_id: str,
    *,
    issuer_url: str,
    vcluster_chart_version: str,
    vcluster_chart_repository: str = "https://charts.loft.sh",
) -> s.TenantSpec:
    """The whole desired state of one organization, in a stable order (by name)."""
    org = session.get_one(m.Organization, organization_id)
    workspaces = session.scalars(
        select(m.Workspace)
        .where(m.Workspace.organization_id == org.id, m.Workspace.state != "deleting")
        .order_by(m.Workspace.name)
    ).all()
    ws_ids = [w.id for w in workspaces]
    groups = session.scalars(select(m.Group).where(m.Group.workspace_id.in_(ws_ids))).all()
    projects = session.scalars(
        select(m.Project).where(m.Project.workspace_id.in_(ws_ids)).order_by(m.Project.name)
    ).all()
    project_ids = [p.id for p in projects]
    roles = session.scalars(
        select(m.ProjectRole)
        .where(m.ProjectRole.project_id.in_(project_ids))
        .order_by(m.ProjectRole.name)
    ).all()
    bindings = session.scalars(
        select(m.RoleBinding)
        .where(m.RoleBinding.workspace_id.in_(ws_ids))
        .order_by(m.RoleBinding.name)
    ).all()
    cronjobs = session.scalars(
        select(m.CronJob).where(m.CronJob.project_id.in_(project_ids)).order_by(m.CronJob.name)
    ).all()
    functions = session.scalars(
        select(m.Function).where(m.Function.project_id.in_(project_ids)).order_by(m.Function.name)
    ).all()

    group_name = {g.id: g.name for g in groups}
    role_name = {r.id: r.name for r in roles}
    groups_by_ws: dict[str, list[s.GroupSpec]] = defaultdict(list)
    ws_bindings: dict[str, list[s.WorkspaceRoleBindingSpec]] = defaultdict(list)
    by_project: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for g in sorted(groups, key=lambda g: g.name):
        groups_by_ws[g.workspace_id].append(
            s.GroupSpec(name=g.name, parent=group_name.get(g.parent_id) if g.parent_id else None)
        )
    for b in bindings:
        if b.project_id is None:
            assert b.cluster_role is not None
            ws_bindings[b.workspace_id].append(
                s.WorkspaceRoleBindingSpec(
                    group=group_name[b.group_id],
                    cluster_role=b.cluster_role,
                )
            )
        elif b.cluster_role is not None:
            by_project[("bindings", b.project_id)].append(
                s.ProjectRoleBindingSpec(
                    group=group_name[b.group_id], role_kind="ClusterRole", role=b.cluster_role
                )
            )
        else:
            assert b.project_role_id is not None
            by_project[("bindings", b.project_id)].append(
                s.ProjectRoleBindingSpec(
                    group=group_name[b.group_id],
                    role_kind="Role",
                    role=role_name[b.project_role_id],
                )
            )
    for r in roles:
        by_project[("roles", r.project_id)].append(
            s.ProjectRoleSpec(name=r.name, rules=tuple(s.PolicyRule(**rule) for rule in r.rules))
        )
    for c in cronjobs:
        by_project[("cronjobs", c.project_id)].append(
            s.CronJobSpec(
                name=c.name,
                schedule=c.schedule,
                image=c.image,
                command=tuple(c.command),
                args=tuple(c.args),
                env=_env(c.env),
                suspend=c.suspend,
                concurrency_policy=c.concurrency_policy,
            )
        )
    for f in functions:
        by_project[("functions", f.project_id)].append(
            s.FunctionSpec(
                name=f.name,
                image=f.image,
                env=_env(f.env),
                port=f.port,
                min_scale=f.min_scale,
                max_scale=f.max_scale,
                concurrency=f.concurrency,
            )
        )
    projects_by_ws: dict[str, list[s.ProjectSpec]] = defaultdict(list)
    for p in projects:
        projects_by_ws[p.workspace_id].append(
            s.ProjectSpec(
                name=p.name,
                quota=p.quota,
                limit_range=_limit_range(p.limit_range),
                roles=tuple(by_project[("roles", p.id)]),
                bindings=tuple(by_project[("bindings", p.id)]),
                cronjobs=tuple(by_project[("cronjobs", p.id)]),
                functions=tuple(by_project[("functions", p.id)]),
            )
        )
    return s.TenantSpec(
        organization=s.OrganizationSpec(id=org.id, name=org.name),
        issuer_url=issuer_url,
        vcluster_chart_version=vcluster_chart_version,
        vcluster_chart_repository=vcluster_chart_repository,
        workspaces=tuple(
            s.WorkspaceSpec(
                name=w.name,
                id=w.id,
                plan=plan_spec(w.plan),
                groups=tuple(groups_by_ws[w.id]),
                bindings=tuple(ws_bindings[w.id]),
                projects=tuple(projects_by_ws[w.id]),
            )
            for w in workspaces
        ),
    )
