"""Request and response bodies, kept apart from the ORM models.

Create/Update bodies reuse the renderer's own field types (reconciler.spec), so the API
refuses exactly what could not be rendered, with the same rule in the message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from reconciler import spec as s

T = TypeVar("T")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- changes ------------------------------------------------------------------------------


class Step(BaseModel):
    """One step of a change's lifecycle: pending, committed, then applied or failed."""

    state: str
    at: datetime
    reason: str | None = None


class ChangePublic(Public):
    id: int
    state: str
    action: str
    target: str
    actor: str
    request_id: str
    commit_sha: str | None
    reason: str | None  # why it failed, in one sentence (or why nothing was committed)
    raw_status: str | None = None  # Flux's own words when it failed
    created_at: datetime
    committed_at: datetime | None
    settled_at: datetime | None = None  # applied or failed
    link: str
    history: list[Step] = []  # on GET /changes/{id}


class Changed(BaseModel, Generic[T]):
    """What every mutation answers: the resource as stored and the change that carries it."""

    resource: T | None
    change: ChangePublic


# -- users and tokens ---------------------------------------------------------------------


class UserPublic(Public):
    id: str
    email: str
    name: str


class TokenCreate(Body):
    name: str = Field(default="", max_length=100)


class TokenCreated(BaseModel):
    id: str
    name: str
    token: str  # shown once; only its hash is stored


# -- organizations ------------------------------------------------------------------------


class OrganizationCreate(Body):
    name: s.TenantName
    display_name: str = Field(default="", max_length=200)


class OrganizationUpdate(Body):
    display_name: str = Field(max_length=200)


class OrganizationPublic(Public):
    id: str
    name: str
    display_name: str
    created_at: datetime


class MemberCreate(Body):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)
    role: Literal["owner", "billing"] = "owner"


class MemberPublic(BaseModel):
    email: str
    role: str


class PlanPublic(Public):
    name: str
    display_name: str
    quota: dict[str, str]
    limit_range: dict[str, Any]
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    allowed_registries: list[str]


# -- workspaces, groups -------------------------------------------------------------------


class WorkspaceCreate(Body):
    name: s.WorkspaceName
    plan: s.Label


class WorkspaceUpdate(Body):
    plan: s.Label


class WorkspacePublic(BaseModel):
    id: str
    name: str
    plan: str
    state: str
    created_at: datetime


class GroupCreate(Body):
    name: s.GroupName
    parent: s.GroupName = "WorkspaceMembers"


class GroupUpdate(Body):
    parent: s.GroupName


class GroupPublic(BaseModel):
    id: str
    name: str
    parent: str | None
    members: list[str]


class GroupMemberCreate(Body):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)


# -- projects and what lives in them ------------------------------------------------------


class ProjectCreate(Body):
    name: s.Label
    quota: dict[s.QuotaResource, s.Quantity] = Field(default_factory=dict)
    limit_range: s.LimitRangeSpec | None = None


class ProjectUpdate(Body):
    quota: dict[s.QuotaResource, s.Quantity] | None = None
    limit_range: s.LimitRangeSpec | None = None


class ProjectPublic(BaseModel):
    id: str
    name: str
    quota: dict[str, str]
    limit_range: dict[str, Any] | None
    created_at: datetime


class ProjectRoleCreate(Body):
    name: s.Label
    rules: list[s.PolicyRule] = Field(min_length=1, max_length=100)


class ProjectRoleUpdate(Body):
    rules: list[s.PolicyRule] = Field(min_length=1, max_length=100)


class ProjectRolePublic(BaseModel):
    id: str
    name: str
    rules: list[dict[str, Any]]


def _cluster_role(v: str) -> str:
    if v not in s.PRESET_CLUSTER_ROLES:
        raise ValueError(
            "custom ClusterRoles are not allowed: must be one of "
            + ", ".join(s.PRESET_CLUSTER_ROLES)
        )
    return v


class RoleBindingCreate(Body):
    """Bind a group to a preset ClusterRole (workspace-wide, or in one project) or to a
    ProjectRole (project required)."""

    name: s.Label
    group: s.GroupName
    project: s.Label | None = None
    cluster_role: Annotated[str, AfterValidator(_cluster_role)] | None = None
    project_role: s.Label | None = None

    @model_validator(mode="after")
    def _one_role(self) -> RoleBindingCreate:
        if (self.cluster_role is None) == (self.project_role is None):
            raise ValueError("give exactly one of cluster_role and project_role")
        if self.project_role is not None and self.project is None:
            raise ValueError("project_role needs project: a ProjectRole exists only in its project")
        return self


class RoleBindingPublic(BaseModel):
    id: str
    name: str
    group: str
    project: str | None
    cluster_role: str | None
    project_role: str | None


class CronJobCreate(Body):
    name: s.Label
    schedule: s.CronSchedule
    image: s.Image
    command: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=64
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    env: list[s.EnvVar] = Field(default_factory=list, max_length=100)
    suspend: bool = False
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Forbid"


class CronJobUpdate(Body):
    schedule: s.CronSchedule | None = None
    image: s.Image | None = None
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64
    )
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=64)
    env: list[s.EnvVar] | None = Field(default=None, max_length=100)
    suspend: bool | None = None
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] | None = None


class CronJobPublic(Public):
    id: str
    name: str
    schedule: str
    image: str
    command: list[str]
    args: list[str]
    env: list[dict[str, str]]
    suspend: bool
    concurrency_policy: str


class FunctionCreate(Body):
    name: s.ServiceName
    image: s.Image
    env: list[s.EnvVar] = Field(default_factory=list, max_length=100)
    port: int | None = Field(default=None, ge=1, le=65535)
    min_scale: int = Field(default=0, ge=0, le=1000)
    max_scale: int = Field(default=10, ge=1, le=1000)
    concurrency: int | None = Field(default=None, ge=1, le=1000)

    @model_validator(mode="after")
    def _scale_bounds(self) -> FunctionCreate:
        if self.min_scale > self.max_scale:
            raise ValueError("min_scale must not exceed max_scale")
        return self


class FunctionUpdate(Body):
    image: s.Image | None = None
    env: list[s.EnvVar] | None = Field(default=None, max_length=100)
    port: int | None = Field(default=None, ge=1, le=65535)
    min_scale: int | None = Field(default=None, ge=0, le=1000)
    max_scale: int | None = Field(default=None, ge=1, le=1000)
    concurrency: int | None = Field(default=None, ge=1, le=1000)


class FunctionPublic(Public):
    id: str
    name: str
    image: str
    env: list[dict[str, str]]
    port: int | None
    min_scale: int
    max_scale: int
    concurrency: int | None
