"""Domain tables. A mutation writes its rows and one Change row in the same transaction (outbox)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

Json = JSON().with_variant(JSONB(), "postgresql")


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Organization(Timestamps, Base):
    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    members: Mapped[list[OrganizationMember]] = relationship(
        back_populates="organization", cascade="all, delete-orphan"
    )


class User(Timestamps, Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")


class ApiToken(Timestamps, Base):
    """A personal API token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user: Mapped[User] = relationship()


class OrganizationMember(Timestamps, Base):
    __tablename__ = "organization_members"
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(20))  # owner | billing
    organization: Mapped[Organization] = relationship(back_populates="members")
    user: Mapped[User] = relationship()


class Plan(Timestamps, Base):
    __tablename__ = "plans"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    quota: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    limit_range: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    node_selector: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    tolerations: Mapped[list[dict[str, str]]] = mapped_column(Json, default=list)
    allowed_registries: Mapped[list[str]] = mapped_column(Json, default=list)


class Workspace(Timestamps, Base):
    __tablename__ = "workspaces"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    state: Mapped[str] = mapped_column(String(20), default="provisioning")
    state_reason: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[Plan] = relationship()
    organization: Mapped[Organization] = relationship()


class Group(Timestamps, Base):
    """A Workspace group; groups form a tree rooted at WorkspaceMembers."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))


class GroupMember(Timestamps, Base):
    __tablename__ = "group_members"
    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    user: Mapped[User] = relationship()


class Project(Timestamps, Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    quota: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    limit_range: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    state: Mapped[str] = mapped_column(String(20), default="provisioning")
    state_reason: Mapped[str | None] = mapped_column(Text)


class ProjectRole(Timestamps, Base):
    """A custom Role inside one Project (custom ClusterRoles are refused)."""

    __tablename__ = "project_roles"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    rules: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)


class RoleBinding(Timestamps, Base):
    """A group bound to a preset ClusterRole (workspace-wide or in a project) or a ProjectRole."""

    __tablename__ = "role_bindings"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    cluster_role: Mapped[str | None] = mapped_column(String(63))
    project_role_id: Mapped[str | None] = mapped_column(
        ForeignKey("project_roles.id", ondelete="CASCADE")
    )
    group: Mapped[Group] = relationship()
    project_role: Mapped[ProjectRole | None] = relationship()


class CronJob(Timestamps, Base):
    __tablename__ = "cronjobs"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    schedule: Mapped[str] = mapped_column(String(100))
    image: Mapped[str] = mapped_column(String(255))
    command: Mapped[list[str]] = mapped_column(Json, default=list)
    args: Mapped[list[str]] = mapped_column(Json, default=list)
    env: Mapped[list[dict[str, str]]] = mapped_column(Json, default=list)
    suspend: Mapped[bool] = mapped_column(Boolean, default=False)
    concurrency_policy: Mapped[str] = mapped_column(String(10), default="Forbid")


class Function(Timestamps, Base):
    """A Knative Service in a Project."""

    __tablename__ = "functions"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    image: Mapped[str] = mapped_column(String(255))
    env: Mapped[list[dict[str, str]]] = mapped_column(Json, default=list)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    min_scale: Mapped[int] = mapped_column(Integer, default=0)
    max_scale: Mapped[int] = mapped_column(Integer, default=10)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Change(Base):
    """The outbox and the audit record: one per mutation, committed with the mutation's rows.

    pending -> committed (commit_sha) | failed (reason). published_at is set once the relay
    has handed it to JetStream; a change left unpublished by a crash is picked up again.
    """

    __tablename__ = "changes"
    __table_args__ = (
        Index("ix_changes_org_state", "organization_id", "state", "id"),
        Index("ix_changes_unpublished", "published_at", postgresql_where="published_at IS NULL"),
    )
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    actor_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_name: Mapped[str] = mapped_column(String(200))
    actor_email: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(50))  # e.g. project.create
    target: Mapped[str] = mapped_column(String(400))  # e.g. acme/dev/web
    request_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20), default="pending")
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    committed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by the status watcher: when Flux applied (or failed to apply) a revision carrying it.
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    raw_status: Mapped[str | None] = mapped_column(Text)  # Flux's own words, beside `reason`


class StateEvent(Base):
    """The history of states: one row per real transition of a workspace, project or change."""

    __tablename__ = "state_events"
    __table_args__ = (Index("ix_state_events_entity", "entity", "entity_id", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(String(20))  # workspace | project | change
    entity_id: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text)
    # When Flux made the transition (a condition's lastTransitionTime), if it said.
    observed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
