"""The pure platform renderer: PlatformSpec -> {path: bytes} of the installation's platform repo.

One platform repository per installation (GitStore id `platform`). It holds what a tenant may
not write for itself: per Organization, its Flux namespace `<org>--system` with the GitRepository
of its tenant repository, the `host` Kustomization run as the tenant's own ServiceAccount, the
Receiver Hexabase notifies, and the RBAC that confines that ServiceAccount to the
organization's workspace namespaces. Same pipeline as render.py (templates, the `q` filter,
schema checks, canonical YAML, managed header): its internals are reused, not copied.

The layout is documented in templates/platform/README.md.j2 (the repository's README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from reconciler import render
from reconciler.render import (
    LAYOUT_VERSION,
    MANAGED_HEADER,
    SYSTEM_WORKSPACE,
    TENANT_SERVICE_ACCOUNT,
    VCLUSTER_RELEASE,
    flux_namespace,
    workspace_namespace,
)
from reconciler.spec import (
    OrganizationSpec,
    PlatformOrganizationSpec,
    PlatformSpec,
)

PLATFORM_REPO_ID = "platform"  # its GitStore id; organization ids are UUIDs, never this
HOST_KUSTOMIZATION = "host"  # in <org>--system: applies the tenant repository's ./host
RECEIVER_TOKEN_SECRET = "receiver-token"  # key `token`; created by the platform, never in Git
TENANT_HOST_ROLE = "hexabase:tenant-host"
NODES_ROLE = "hexabase:vcluster-nodes"
POLL_INTERVAL = "1m"  # the fallback when a Receiver notification is lost
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

TOP_LEVEL_FILES = ("README.md", "kustomization.yaml")
MANAGED_DIRS = ("platform", "tenants")
RBAC_FILE = "platform/rbac.yaml"


@dataclass(frozen=True)
class ReceiverRef:
    """A notification-controller Receiver, as its webhook path is derived from it."""

    name: str
    namespace: str


# The platform repository's own Receiver, beside the GitRepository Flux is bootstrapped with
# (`platform` in flux-system); it reads its token from the same Secret name as the tenants'.
PLATFORM_RECEIVER = ReceiverRef(name="platform", namespace="flux-system")


def tenant_receiver(organization_name: str) -> ReceiverRef:
    """The Receiver of an organization's tenant repository: named after the organization (as
    its GitRepository is), in `<org>--system`."""
    return ReceiverRef(
        name=organization_name, namespace=workspace_namespace(organization_name, SYSTEM_WORKSPACE)
    )


def tenant_repo_url(git_base_url: str, organization_id: str) -> str:
    return f"{git_base_url.rstrip('/')}/{organization_id}.git"


def is_managed(path: PurePosixPath) -> bool:
    """True for a path Hexabase owns in the platform repository: README.md, kustomization.yaml,
    platform/** and tenants/**. Odd paths (absolute, '..') are never managed."""
    parts = path.parts
    if not parts or path.is_absolute() or any(p in ("", ".", "..") for p in parts):
        return False
    if len(parts) == 1:
        return parts[0] in TOP_LEVEL_FILES
    return parts[0] in MANAGED_DIRS


def _org(organization: PlatformOrganizationSpec) -> OrganizationSpec:
    return OrganizationSpec(id=organization.id, name=organization.name)


def _system_labels(organization: PlatformOrganizationSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "hexabase",
        "hexabase.io/organization": organization.id,
        "owner": organization.name,
    }


def _workspace_labels(organization: PlatformOrganizationSpec, workspace: str) -> dict[str, str]:
    # Exactly the labels of the tenant repository's host/workspaces/<ws>/namespace.yaml.
    return {
        "app.kubernetes.io/managed-by": "hexabase",
        "hexabase.io/organization": organization.id,
        "hexabase.io/workspace": workspace,
        "owner": organization.name,
    }


def render_platform(spec: PlatformSpec) -> dict[PurePosixPath, bytes]:
    """Every file Hexabase writes in the platform repository. Same spec, same bytes."""
    out = render._Files()
    out.add(PurePosixPath("README.md"), _readme())
    labels = {"app.kubernetes.io/managed-by": "hexabase"}
    out.manifest(
        RBAC_FILE,
        "platform/rbac.yaml.j2",
        labels=labels,
        tenant_host_role=TENANT_HOST_ROLE,
        nodes_role=NODES_ROLE,
        all_verbs=list(ALL_VERBS),
    )
    organizations = sorted(spec.organizations, key=lambda o: o.name)
    seen: dict[str, str] = {}
    for organization in organizations:
        if organization.name in seen or organization.id in seen.values():
            raise render.RenderError(
                f"tenants/{organization.name}.yaml",
                "two organizations share a name or an id",
            )
        seen[organization.name] = organization.id
        _render_tenant(out, spec, organization)
    out.manifest(
        "kustomization.yaml",
        "kustomization.yaml.j2",
        resources=[RBAC_FILE, *(f"tenants/{o.name}.yaml" for o in organizations)],
    )
    return out.files


def _render_tenant(
    out: render._Files, spec: PlatformSpec, organization: PlatformOrganizationSpec
) -> None:
    org = _org(organization)
    receiver = tenant_receiver(organization.name)
    workspaces = sorted(organization.workspaces, key=lambda w: w.name)
    context_workspaces = []
    for ws in workspaces:
        namespace = workspace_namespace(organization.name, ws.name)
        context_workspaces.append({
            "namespace": namespace,
            "labels": _workspace_labels(organization, ws.name),
            "reads_nodes": ws.reads_nodes,
            "nodes_binding": f"{NODES_ROLE}:{namespace}",
        })  # fmt: skip
    out.manifest(
        f"tenants/{organization.name}.yaml",
        "platform/tenant.yaml.j2",
        organization_name=organization.name,
        system_namespace=flux_namespace(org),
        system_labels=_system_labels(organization),
        service_account=TENANT_SERVICE_ACCOUNT,
        vcluster_service_account=f"vc-{VCLUSTER_RELEASE}",
        git_repository=organization.name,
        url=tenant_repo_url(spec.git_base_url, organization.id),
        poll_interval=POLL_INTERVAL,
        host_kustomization=HOST_KUSTOMIZATION,
        receiver=receiver.name,
        receiver_secret=RECEIVER_TOKEN_SECRET,
        namespaces_role=f"hexabase:tenant-namespaces:{organization.name}",
        workspace_namespaces=[w["namespace"] for w in context_workspaces],
        tenant_host_role=TENANT_HOST_ROLE,
        nodes_role=NODES_ROLE,
        workspaces=context_workspaces,
    )


def _readme() -> bytes:
    text = render._template(render.TEMPLATES_DIR, "platform/README.md.j2").render(
        layout_version=LAYOUT_VERSION,
        tenant_host_role=TENANT_HOST_ROLE,
        nodes_role=NODES_ROLE,
        service_account=TENANT_SERVICE_ACCOUNT,
        host_kustomization=HOST_KUSTOMIZATION,
        receiver_secret=RECEIVER_TOKEN_SECRET,
        poll_interval=POLL_INTERVAL,
    )
    return (
        "<!-- Managed by Hexabase: changes here are overwritten; "
        "change it through the Hexabase API or UI. -->\n" + text
    ).encode("utf-8")


def skeleton_files() -> dict[PurePosixPath, bytes]:
    """The first commit of a new platform repository: its README."""
    return {PurePosixPath("README.md"): _readme()}


def receiver_token_secret(organization_name: str, token: str) -> dict[str, Any]:
    """The Secret the Receiver of `organization_name` reads its token from (key `token`), for
    the platform or the testbed to apply. Never rendered into Git: it holds the secret."""
    receiver = tenant_receiver(organization_name)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": RECEIVER_TOKEN_SECRET,
            "namespace": receiver.namespace,
            "labels": {"app.kubernetes.io/managed-by": "hexabase", "owner": organization_name},
        },
        "type": "Opaque",
        "stringData": {"token": token},
    }


__all__ = [
    "MANAGED_HEADER",
    "PLATFORM_REPO_ID",
    "ReceiverRef",
    "is_managed",
    "receiver_token_secret",
    "render_platform",
    "skeleton_files",
    "tenant_receiver",
    "tenant_repo_url",
]
