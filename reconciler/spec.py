"""TenantSpec: an Organization's whole desired state, the only input of the renderer.

Every name that reaches a path or YAML is validated here, so a spec that exists is safe to
render. The API validates the same rules earlier, to answer 422 before anything is written.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from reconciler import names


def _label(v: str) -> str:
    return names.check(v, names.is_dns1123_label(v), names.DNS1123_LABEL_RULE)


def _service(v: str) -> str:
    return names.check(v, names.is_dns1035_label(v), names.DNS1035_LABEL_RULE)


def _tenant(v: str) -> str:
    return names.check(v, names.is_tenant_name(v), names.TENANT_NAME_RULE)


def _workspace(v: str) -> str:
    return names.check(v, names.is_workspace_name(v), names.WORKSPACE_NAME_RULE)


def _group(v: str) -> str:
    return names.check(v, names.is_group_name(v), names.GROUP_NAME_RULE)


def _quantity(v: str) -> str:
    return names.check(v, names.is_quantity(v), names.QUANTITY_RULE)


def _image(v: str) -> str:
    return names.check(v, names.is_image(v), names.IMAGE_RULE)


def _cron(v: str) -> str:
    return names.check(v, names.is_cron_schedule(v), "must be a five-field cron expression")


def _env_name(v: str) -> str:
    return names.check(v, bool(names.ENV_NAME.fullmatch(v)), names.ENV_NAME_RULE)


Label = Annotated[str, AfterValidator(_label)]
ServiceName = Annotated[str, AfterValidator(_service)]  # Knative Services: DNS-1035
TenantName = Annotated[str, AfterValidator(_tenant)]  # organizations
WorkspaceName = Annotated[str, AfterValidator(_workspace)]  # a tenant name, never "system"
GroupName = Annotated[str, AfterValidator(_group)]
Quantity = Annotated[str, AfterValidator(_quantity)]
Image = Annotated[str, AfterValidator(_image)]
CronSchedule = Annotated[str, AfterValidator(_cron)]
EnvName = Annotated[str, AfterValidator(_env_name)]

# Resource names a quota or limit may name: a closed set, so none of them is user text.
QuotaResource = Literal[
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "requests.storage",
    "persistentvolumeclaims",
    "pods",
    "services",
    "configmaps",
    "secrets",
    "count/cronjobs.batch",
    "count/jobs.batch",
    "count/services.serving.knative.dev",
]
ContainerResource = Literal["cpu", "memory"]

PRESET_CLUSTER_ROLES = ("hexabase:workspace-admin", "hexabase:workspace-viewer")
PresetClusterRole = Literal["hexabase:workspace-admin", "hexabase:workspace-viewer"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LimitRangeSpec(Frozen):
    """Per-container defaults and bounds (a LimitRange of type Container)."""

    default: dict[ContainerResource, Quantity] = Field(default_factory=dict)
    default_request: dict[ContainerResource, Quantity] = Field(default_factory=dict)
    max: dict[ContainerResource, Quantity] = Field(default_factory=dict)


class Toleration(Frozen):
    key: Annotated[
        str, AfterValidator(lambda v: names.check(v, names.is_label_key(v), names.LABEL_KEY_RULE))
    ]
    operator: Literal["Equal", "Exists"] = "Equal"
    value: Annotated[
        str,
        AfterValidator(lambda v: names.check(v, names.is_label_value(v), names.LABEL_VALUE_RULE)),
    ] = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class PlanSpec(Frozen):
    """What a Plan gives a Workspace: quota and limits, and where its pods may run."""

    name: Label
    quota: dict[QuotaResource, Quantity] = Field(default_factory=dict)
    limit_range: LimitRangeSpec = LimitRangeSpec()
    # Dedicated-node plans: the vCluster's pods are pinned to these nodes.
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    # Registries images may come from (Kyverno policy); empty means any registry.
    allowed_registries: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _node_selector_is_labels(self) -> PlanSpec:
        for key, value in self.node_selector.items():
            names.check(key, names.is_label_key(key), names.LABEL_KEY_RULE)
            names.check(value, names.is_label_value(value), names.LABEL_VALUE_RULE)
        for registry in self.allowed_registries:
            names.check(registry, names.is_registry(registry), names.REGISTRY_RULE)
        return self


class GroupSpec(Frozen):
    """A Workspace group; parent None only for the root (WorkspaceMembers)."""

    name: GroupName
    parent: GroupName | None = None


class PolicyRule(Frozen):
    api_groups: tuple[
        Annotated[
            str,
            AfterValidator(lambda v: names.check(v, names.is_api_group(v), names.API_GROUP_RULE)),
        ],
        ...,
    ] = ("",)
    resources: tuple[
        Annotated[
            str,
            AfterValidator(lambda v: names.check(v, names.is_rbac_word(v), names.RBAC_WORD_RULE)),
        ],
        ...,
    ]
    verbs: tuple[
        Annotated[
            str,
            AfterValidator(lambda v: names.check(v, names.is_rbac_word(v), names.RBAC_WORD_RULE)),
        ],
        ...,
    ]


class ProjectRoleSpec(Frozen):
    """A custom Role inside one Project's Namespace."""

    name: Label
    rules: tuple[PolicyRule, ...]


class ProjectRoleBindingSpec(Frozen):
    """A group bound inside a Project, to a preset ClusterRole or to one of its ProjectRoles."""

    group: GroupName
    role_kind: Literal["ClusterRole", "Role"]
    role: str

    @model_validator(mode="after")
    def _role_name(self) -> ProjectRoleBindingSpec:
        if self.role_kind == "ClusterRole":
            if self.role not in PRESET_CLUSTER_ROLES:
                raise ValueError(
                    f"role must be one of the preset ClusterRoles {', '.join(PRESET_CLUSTER_ROLES)}"
                )
        else:
            _label(self.role)
        return self


class WorkspaceRoleBindingSpec(Frozen):
    """A group bound workspace-wide (ClusterRoleBinding) to a preset ClusterRole."""

    group: GroupName
    cluster_role: PresetClusterRole


class EnvVar(Frozen):
    name: EnvName
    value: str = Field(max_length=4096)


class CronJobSpec(Frozen):
    name: Label
    schedule: CronSchedule
    image: Image
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    suspend: bool = False
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Forbid"


class FunctionSpec(Frozen):
    """A Knative Service; scales to zero unless min_scale says otherwise."""

    name: ServiceName
    image: Image
    env: tuple[EnvVar, ...] = ()
    port: int | None = Field(default=None, ge=1, le=65535)
    min_scale: int = Field(default=0, ge=0, le=1000)
    max_scale: int = Field(default=10, ge=1, le=1000)
    concurrency: int | None = Field(default=None, ge=1, le=1000)

    @model_validator(mode="after")
    def _scale_bounds(self) -> FunctionSpec:
        if self.min_scale > self.max_scale:
            raise ValueError("min_scale must not exceed max_scale")
        return self


class ProjectSpec(Frozen):
    """A Project: one Namespace inside the Workspace's vCluster."""

    name: Label
    quota: dict[QuotaResource, Quantity] = Field(default_factory=dict)
    limit_range: LimitRangeSpec | None = None  # None: the plan's limit range
    roles: tuple[ProjectRoleSpec, ...] = ()
    bindings: tuple[ProjectRoleBindingSpec, ...] = ()
    cronjobs: tuple[CronJobSpec, ...] = ()
    functions: tuple[FunctionSpec, ...] = ()


class WorkspaceSpec(Frozen):
    """A Workspace: one vCluster on the host, in host namespace `<org>--<workspace>`."""

    name: WorkspaceName
    id: str = Field(pattern=r"^[a-z0-9-]{1,40}$")  # the OIDC client id of its API server
    plan: PlanSpec
    groups: tuple[GroupSpec, ...] = ()
    bindings: tuple[WorkspaceRoleBindingSpec, ...] = ()
    projects: tuple[ProjectSpec, ...] = ()


class OrganizationSpec(Frozen):
    id: str = Field(pattern=r"^[a-z0-9-]{1,40}$")
    name: TenantName  # the slug; it prefixes host namespaces


class TenantSpec(Frozen):
    """The renderer's only input."""

    organization: OrganizationSpec
    # Hexabase's OIDC issuer URL, trusted by every workspace API server.
    issuer_url: Annotated[
        str, AfterValidator(lambda v: names.check(v, names.is_https_url(v), names.URL_RULE))
    ]
    vcluster_chart_version: str = Field(default="0.36.1", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    # The Helm repository serving the vCluster chart (a mirror, or the testbed's own).
    vcluster_chart_repository: Annotated[
        str, AfterValidator(lambda v: names.check(v, names.is_https_url(v), names.URL_RULE))
    ] = "https://charts.loft.sh"
    workspaces: tuple[WorkspaceSpec, ...] = ()


# --- the platform repository -------------------------------------------------------------


class PlatformWorkspaceSpec(Frozen):
    """What the platform repository needs of a Workspace: its host namespace's name, and
    whether its vCluster reads the host's nodes (dedicated-node plans)."""

    name: WorkspaceName
    reads_nodes: bool = False


class PlatformOrganizationSpec(Frozen):
    id: str = Field(pattern=r"^[a-z0-9-]{1,40}$")  # its tenant repository is <id>.git
    name: TenantName
    workspaces: tuple[PlatformWorkspaceSpec, ...] = ()


def _git_base_url(v: str) -> str:
    names.check(v, names.is_https_url(v), names.URL_RULE)
    return v.rstrip("/")


class PlatformSpec(Frozen):
    """The platform repository's only input: every Organization and its Workspaces."""

    # How Flux reaches the tenant repositories: <git_base_url>/<organization id>.git
    git_base_url: Annotated[str, AfterValidator(_git_base_url)]
    organizations: tuple[PlatformOrganizationSpec, ...] = ()
