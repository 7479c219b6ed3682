"""Organizations, their users, and the plans they can choose from."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import func, select

from api.db import models as m
from api.db.access import organization_for
from api.db.changes import change_public, record_change
from api.deps import ContextDep, CurrentUser, SessionDep
from api.errors import Invalid, NotFound
from api.schemas import (
    Changed,
    MemberCreate,
    MemberPublic,
    OrganizationCreate,
    OrganizationPublic,
    OrganizationUpdate,
    PlanPublic,
)

router = APIRouter(prefix="/api/v1", tags=["organizations"])


@router.get("/plans")
def list_plans(db: SessionDep, user: CurrentUser) -> list[PlanPublic]:
    return [PlanPublic.model_validate(p) for p in db.scalars(select(m.Plan).order_by(m.Plan.name))]


@router.post("/organizations", status_code=201)
def create_organization(
    body: OrganizationCreate, db: SessionDep, ctx: ContextDep
) -> Changed[OrganizationPublic]:
    with db.begin():
        if db.scalar(select(m.Organization.id).where(m.Organization.name == body.name)):
            raise Invalid("name", f"an organization named {body.name!r} already exists")
        org = m.Organization(name=body.name, display_name=body.display_name)
        db.add(org)
        db.flush()
        db.add(m.OrganizationMember(organization_id=org.id, user_id=ctx.user.id, role="owner"))
        change = record_change(
            db,
            organization_id=org.id,
            actor=ctx.user,
            action="organization.create",
            target=org.name,
            request_id=ctx.request_id,
        )
    ctx.committed()
    return Changed(resource=OrganizationPublic.model_validate(org), change=change_public(change))


@router.get("/organizations")
def list_organizations(db: SessionDep, user: CurrentUser) -> list[OrganizationPublic]:
    orgs = db.scalars(
        select(m.Organization)
        .join(m.OrganizationMember)
        .where(m.OrganizationMember.user_id == user.id)
        .order_by(m.Organization.name)
    )
    return [OrganizationPublic.model_validate(o) for o in orgs]


@router.get("/organizations/{org}")
def get_organization(org: str, db: SessionDep, user: CurrentUser) -> OrganizationPublic:
    return OrganizationPublic.model_validate(organization_for(db, user, org))


@router.patch("/organizations/{org}")
def update_organization(
    org: str, body: OrganizationUpdate, db: SessionDep, ctx: ContextDep
) -> Changed[OrganizationPublic]:
    with db.begin():
        row = organization_for(db, ctx.user, org, lock=True)
        row.display_name = body.display_name
        change = record_change(
            db,
            organization_id=row.id,
            actor=ctx.user,
            action="organization.update",
            target=row.name,
            request_id=ctx.request_id,
        )
    ctx.committed()
    return Changed(resource=OrganizationPublic.model_validate(row), change=change_public(change))


@router.delete("/organizations/{org}", status_code=204)
def delete_organization(org: str, db: SessionDep, user: CurrentUser) -> Response:
    """Only an empty organization can go; its repository stays behind as the audit trail."""
    with db.begin():
        row = organization_for(db, user, org, lock=True)
        workspaces = db.scalar(
            select(func.count())
            .select_from(m.Workspace)
            .where(m.Workspace.organization_id == row.id)
        )
        if workspaces:
            raise Invalid("organization", f"delete the {workspaces} workspace(s) of {org!r} first")
        db.delete(row)
    return Response(status_code=204)


@router.get("/organizations/{org}/members")
def list_members(org: str, db: SessionDep, user: CurrentUser) -> list[MemberPublic]:
    row = organization_for(db, user, org)
    members = db.scalars(
        select(m.OrganizationMember).where(m.OrganizationMember.organization_id == row.id)
    )
    return sorted(
        (MemberPublic(email=mb.user.email, role=mb.role) for mb in members), key=lambda x: x.email
    )


def user_by_email(db: SessionDep, email: str) -> m.User:
    """The user with this email, created on first mention (they sign in later)."""
    user = db.scalars(select(m.User).where(m.User.email == email.lower())).first()
    if user is None:
        user = m.User(email=email.lower(), name="")
        db.add(user)
        db.flush()
    return user


@router.post("/organizations/{org}/members", status_code=201)
def add_member(org: str, body: MemberCreate, db: SessionDep, user: CurrentUser) -> MemberPublic:
    with db.begin():
        row = organization_for(db, user, org, lock=True)
        member_user = user_by_email(db, body.email)
        key = {"organization_id": row.id, "user_id": member_user.id}
        if db.get(m.OrganizationMember, key) is not None:
            raise Invalid("email", f"{body.email} is already a user of {org!r}")
        db.add(m.OrganizationMember(**key, role=body.role))
    return MemberPublic(email=member_user.email, role=body.role)


@router.delete("/organizations/{org}/members/{email}", status_code=204)
def remove_member(org: str, email: str, db: SessionDep, user: CurrentUser) -> Response:
    with db.begin():
        row = organization_for(db, user, org, lock=True)
        member = db.scalars(
            select(m.OrganizationMember)
            .join(m.User)
            .where(m.OrganizationMember.organization_id == row.id, m.User.email == email.lower())
        ).first()
        if member is None:
            raise NotFound(f"user {email} in {org!r}")
        owners = db.scalar(
            select(func.count())
            .select_from(m.OrganizationMember)
            .where(
                m.OrganizationMember.organization_id == row.id, m.OrganizationMember.role == "owner"
            )
        )
        if member.role == "owner" and owners == 1:
            raise Invalid("email", "an organization keeps at least one owner")
        db.delete(member)
    return Response(status_code=204)
