"""Small TenantSpec builders for tests: sensible defaults, every field overridable by keyword."""

from __future__ import annotations

from typing import Any

from reconciler.spec import (
    CronJobSpec,
    FunctionSpec,
    GroupSpec,
    LimitRangeSpec,
    OrganizationSpec,
    PlanSpec,
    PlatformOrganizationSpec,
    PlatformSpec,
    PlatformWorkspaceSpec,
    PolicyRule,
    ProjectRoleBindingSpec,
    ProjectRoleSpec,
    ProjectSpec,
    TenantSpec,
    Toleration,
    WorkspaceRoleBindingSpec,
    WorkspaceSpec,
)


def plan(**overrides: Any) -> PlanSpec:
    fields: dict[str, Any] = {
        "name": "standard",
        "quota": {"requests.cpu": "4", "requests.memory": "8Gi", "pods": "50"},
        "limit_range": LimitRangeSpec(
            default={"cpu": "500m", "memory": "512Mi"},
            default_request={"cpu": "100m", "memory": "128Mi"},
        ),
    }
    fields.update(overrides)
    return PlanSpec(**fields)


def dedicated_plan(**overrides: Any) -> PlanSpec:
    fields: dict[str, Any] = {
        "name": "dedicated",
        "node_selector": {"hexabase.io/pool": "acme"},
        "tolerations": (Toleration(key="hexabase.io/dedicated", value="acme"),),
        "allowed_registries": ("ghcr.io/acme", "registry.example.com:5000"),
    }
    fields.update(overrides)
    return plan(**fields)


def project(name: str = "web", **overrides: Any) -> ProjectSpec:
    fields: dict[str, Any] = {"name": name}
    fields.update(overrides)
    return ProjectSpec(**fields)


def full_project(name: str = "web", **overrides: Any) -> ProjectSpec:
    """A project that uses every feature: quota, roles, bindings, a CronJob and a Function."""
    fields: dict[str, Any] = {
        "quota": {"requests.cpu": "2", "count/cronjobs.batch": "5"},
        "roles": (
            ProjectRoleSpec(
                name="deployer",
                rules=(
                    PolicyRule(
                        api_groups=("apps",),
                        resources=("deployments",),
                        verbs=("get", "list", "update"),
                    ),
                ),
            ),
        ),
        "bindings": (
            ProjectRoleBindingSpec(group="Developers", role_kind="Role", role="deployer"),
            ProjectRoleBindingSpec(
                group="WSUsers", role_kind="ClusterRole", role="hexabase:workspace-viewer"
            ),
        ),
        "cronjobs": (
            CronJobSpec(
                name="nightly-report",
                schedule="0 3 * * *",
                image="ghcr.io/acme/report:1.2",
                command=("/bin/report",),
                args=("--since", "24h"),
                env=(EnvVarLike("MODE", "full"),),
            ),
        ),
        "functions": (
            FunctionSpec(name="hello", image="ghcr.io/acme/hello:2.0", port=8080, max_scale=3),
        ),
    }
    fields.update(overrides)
    return project(name, **fields)


def EnvVarLike(name: str, value: str) -> Any:
    from reconciler.spec import EnvVar

    return EnvVar(name=name, value=value)


def workspace(name: str = "dev", **overrides: Any) -> WorkspaceSpec:
    fields: dict[str, Any] = {
        "name": name,
        "id": f"ws-{name}",
        "plan": plan(),
        "groups": (
            GroupSpec(name="WorkspaceMembers"),
            GroupSpec(name="WSAdmins", parent="WorkspaceMembers"),
            GroupSpec(name="WSUsers", parent="WorkspaceMembers"),
        ),
        "bindings": (
            WorkspaceRoleBindingSpec(group="WSUsers", cluster_role="hexabase:workspace-viewer"),
        ),
        "projects": (project("web"),),
    }
    fields.update(overrides)
    return WorkspaceSpec(**fields)


def tenant(**overrides: Any) -> TenantSpec:
    fields: dict[str, Any] = {
        "organization": OrganizationSpec(id="org-1234", name="acme"),
        "issuer_url": "https://hexabase.example.com/oidc",
        "workspaces": (workspace(),),
    }
    fields.update(overrides)
    return TenantSpec(**fields)


def small_org() -> TenantSpec:
    """The golden case: two workspaces (one shared, one dedicated), three projects."""
    return tenant(
        workspaces=(
            workspace("dev", projects=(full_project("web"), project("api"))),
            workspace("prod", plan=dedicated_plan(), projects=(project("web"),)),
        )
    )


def platform(**overrides: Any) -> PlatformSpec:
    """Two organizations: acme with a standard and a dedicated-node workspace, and an empty one."""
    fields: dict[str, Any] = {
        "git_base_url": "http://git.hexabase.test/repos",
        "organizations": (
            PlatformOrganizationSpec(
                id="0c6f1e2a-1d7b-4d8e-9a53-5b2f8f0e4a11",
                name="acme",
                workspaces=(
                    PlatformWorkspaceSpec(name="dev"),
                    PlatformWorkspaceSpec(name="prod", reads_nodes=True),
                ),
            ),
            PlatformOrganizationSpec(id="7d1c0b9e-3f24-4c1a-8e6d-2a9b7c5d3e20", name="globex"),
        ),
    }
    fields.update(overrides)
    return PlatformSpec(**fields)
