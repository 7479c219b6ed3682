"""Which Flux objects speak for which workspace, project and change (api.statusmap), and the
life of a deleted workspace: `deleting` until Flux has removed its vCluster, then `deleted`,
decided only once every kind of Flux object has been listed."""

from __future__ import annotations

from typing import Any

from api.db.status import ChangeRow, OrganizationStatus, ProjectRow, WorkspaceRow
from api.statusmap import evaluate, organization_of

SHA = "a" * 40


def ready(kind: str, namespace: str, name: str) -> tuple[tuple[str, str, str], dict[str, Any]]:
    obj = {
        "kind": kind,
        "metadata": {"namespace": namespace, "name": name, "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Succeeded",
                    "lastTransitionTime": "2026-12-04T10:00:00Z",
                }
            ],
            "lastAppliedRevision": f"main@sha1:{SHA}",
            "history": [{"status": "deployed"}],
        },
    }
    return (kind, namespace, name), obj


def org(
    *, ws_state: str = "provisioning", changes: tuple[ChangeRow, ...] = ()
) -> OrganizationStatus:
    return OrganizationStatus(
        id="o1",
        name="acme",
        workspaces=[WorkspaceRow("w1", "dev", ws_state)],
        projects=[ProjectRow("p1", "dev", "web", "provisioning")],
        changes=list(changes),
    )


def test_namespaces_map_to_their_organization() -> None:
    assert organization_of("acme--dev") == "acme"
    assert organization_of("acme--system") == "acme"
    assert organization_of("flux-system") is None
    assert organization_of("kube-system") is None


def test_workspace_project_and_change_follow_their_objects() -> None:
    objects = dict(
        [
            ready("Kustomization", "acme--system", "host"),
            ready("HelmRelease", "acme--dev", "vcluster"),
            ready("Kustomization", "acme--dev", "hexabase.workspace"),
        ]
    )
    change = ChangeRow(7, "project.create", "acme/dev/web", SHA, "committed")
    found = {
        (t.entity, t.entity_id, t.state)
        for t in evaluate(org(changes=(change,)), objects, lambda r, c: r == c)
    }
    assert found == {
        ("workspace", "w1", "ready"),
        ("project", "p1", "ready"),
        ("change", "7", "applied"),
    }


def test_a_workspace_change_waits_for_the_workspace_kustomization() -> None:
    objects = dict([ready("Kustomization", "acme--system", "host")])
    change = ChangeRow(8, "cronjob.create", "acme/dev/web/nightly", SHA, "committed")
    assert not [
        t
        for t in evaluate(org(changes=(change,)), objects, lambda r, c: True)
        if t.entity == "change"
    ]
    host_only = ChangeRow(9, "workspace.delete", "acme/dev", SHA, "committed")
    assert ("change", "9", "applied") in {
        (t.entity, t.entity_id, t.state)
        for t in evaluate(org(changes=(host_only,)), objects, lambda r, c: True)
    }


def test_a_deleting_workspace_is_deleted_once_its_objects_are_gone_and_everything_was_listed() -> (
    None
):
    still_there = dict([ready("HelmRelease", "acme--dev", "vcluster")])
    assert not [
        t
        for t in evaluate(org(ws_state="deleting"), still_there, lambda r, c: True)
        if t.entity == "workspace"
    ]
    gone: dict[tuple[str, str, str], dict[str, Any]] = {}
    assert ("workspace", "w1", "deleted") in {
        (t.entity, t.entity_id, t.state)
        for t in evaluate(org(ws_state="deleting"), gone, lambda r, c: True)
    }
    # Before every kind is listed, a missing object proves nothing.
    early = evaluate(org(ws_state="deleting"), gone, lambda r, c: True, complete=False)
    assert [t for t in early if t.entity == "workspace"] == []
