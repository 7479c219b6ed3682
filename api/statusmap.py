"""Which Flux objects speak for which Hexabase object, and the transitions they imply.

Pure: the watcher hands in the organization's rows and the Flux objects it has seen; this
answers the transitions to record. Names follow the tenant repository contract: the
organization's GitRepository `<org>` and Kustomization `host` in `<org>--system`; per
workspace, in `<org>--<ws>`, the HelmRelease `vcluster`, the Kustomization
`hexabase.workspace` (its directory inside the vCluster) and one Kustomization per project
(the project's apps/).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from api.db.status import OrganizationStatus, Transition
from reconciler import status
from reconciler.render import VCLUSTER_RELEASE, WORKSPACE_KUSTOMIZATION

ObjectKey = tuple[str, str, str]  # kind, namespace, name
HOST_KUSTOMIZATION = "host"

# Actions whose effect lives only in the host part of the repository.
_HOST_ONLY = ("organization.", "workspace.delete", "workspace.purge")


def system_namespace(org: str) -> str:
    return f"{org}--system"


def workspace_namespace(org: str, workspace: str) -> str:
    return f"{org}--{workspace}"


def organization_of(namespace: str) -> str | None:
    """The organization a namespace belongs to (every tenant namespace is `<org>--<x>`)."""
    org, sep, rest = namespace.partition("--")
    return org if sep and org and rest else None


def _time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def evaluate(
    org: OrganizationStatus,
    objects: Mapping[ObjectKey, Mapping[str, object]],
    contains: Callable[[str, str], bool],
    *,
    complete: bool = True,
) -> list[Transition]:
    """The transitions the current Flux objects imply for this organization. `complete`: every
    kind has been listed, so a missing object is really gone (only then is a deleting
    workspace declared `deleted`)."""
    out: list[Transition] = []
    system = system_namespace(org.name)
    host = objects.get(("Kustomization", system, HOST_KUSTOMIZATION))
    source = objects.get(("GitRepository", system, org.name))
    source_failure = status.object_state(source).failure if source is not None else None

    def add(
        entity: str, entity_id: str, state: str, failure: status.Failure | None, at: str = ""
    ) -> None:
        out.append(
            Transition(
                organization_id=org.id,
                entity=entity,
                entity_id=entity_id,
                state=state,
                reason=failure.sentence if failure else None,
                raw=failure.raw if failure else None,
                observed_at=_time(at),
            )
        )

    for ws in org.workspaces:
        namespace = workspace_namespace(org.name, ws.name)
        release = objects.get(("HelmRelease", namespace, VCLUSTER_RELEASE))
        sync = objects.get(("Kustomization", namespace, WORKSPACE_KUSTOMIZATION))
        if ws.state == "deleting" and release is None and sync is None:
            if complete:
                add("workspace", ws.id, "deleted", None)  # Flux removed its vCluster
            continue
        state, failure = status.workspace_state(release, sync, deleting=ws.state == "deleting")
        if state == "ready" and source_failure is not None:
            state, failure = "degraded", source_failure
        if state != ws.state:
            add("workspace", ws.id, state, failure)
    for project in org.projects:
        namespace = workspace_namespace(org.name, project.workspace)
        sync = objects.get(("Kustomization", namespace, WORKSPACE_KUSTOMIZATION))
        apps = objects.get(("Kustomization", namespace, project.name))
        pstate, failure = status.project_state(sync, apps)
        if pstate != project.state:
            add("project", project.id, pstate, failure)
    for change in org.changes:
        carriers = [host] if host is not None else []
        parts = change.target.split("/")
        if not change.action.startswith(_HOST_ONLY) and len(parts) >= 2:
            sync = objects.get(
                ("Kustomization", workspace_namespace(org.name, parts[1]), WORKSPACE_KUSTOMIZATION)
            )
            if sync is None:
                continue  # the workspace's Kustomization does not exist yet
            carriers.append(sync)
        if host is None:
            continue
        outcome = status.change_outcome(change.commit_sha, carriers, contains)
        if outcome is not None and outcome[0] != change.state:
            add("change", str(change.id), outcome[0], outcome[1], outcome[2])
    return out
