"""Platform renderer tests: golden platform repository, determinism, schema checks, isolation.

Covers:
- the platform repository of `factories.platform()` (two organizations) equals
  tests/golden/platform/ byte for byte (regenerate with
  `HEXABASE_UPDATE_GOLDEN=1 pytest tests/unit/test_platform_render.py` and review the diff);
- same spec -> identical bytes, whatever the order of organizations and workspaces;
- every file carries the managed header and every document passes its schema;
- each organization's Flux namespace, source, Kustomization and Receiver, and the names the
  tenant renderer refers to (GitRepository, namespace labels) agree;
- a ServiceAccount's namespace rights name exactly its workspaces (none without workspaces,
  since an empty resourceNames list would mean every namespace);
- the workspace name `system` is refused; the receiver token never reaches Git.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from reconciler import schema, yamlio
from reconciler.platform import (
    MANAGED_HEADER,
    is_managed,
    receiver_token_secret,
    render_platform,
    tenant_receiver,
    tenant_repo_url,
)
from reconciler.render import render
from reconciler.spec import PlatformOrganizationSpec, PlatformSpec, PlatformWorkspaceSpec
from tests import factories
from tests.unit.test_render import _golden_case


def docs(files: dict[PurePosixPath, bytes], path: str) -> list[dict[str, Any]]:
    return yamlio.load_all(files[PurePosixPath(path)].decode())


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def test_platform_repo_matches_golden_files() -> None:
    _golden_case("platform", render_platform(factories.platform()))


def test_same_spec_renders_identical_bytes_in_any_order() -> None:
    spec = factories.platform()
    shuffled = PlatformSpec(
        git_base_url=spec.git_base_url + "/",
        organizations=tuple(
            o.model_copy(update={"workspaces": tuple(reversed(o.workspaces))})
            for o in reversed(spec.organizations)
        ),
    )
    assert render_platform(spec) == render_platform(spec)
    assert render_platform(shuffled) == render_platform(spec)


def test_every_file_is_managed_and_every_document_passes_its_schema() -> None:
    files = render_platform(factories.platform())
    assert sorted(str(p) for p in files) == [
        "README.md",
        "kustomization.yaml",
        "platform/rbac.yaml",
        "tenants/acme.yaml",
        "tenants/globex.yaml",
    ]
    for path, data in files.items():
        assert is_managed(path), path
        if path.suffix != ".yaml":
            continue
        assert data.decode().startswith(MANAGED_HEADER), path
        for document in yamlio.load_all(data.decode()):
            schema.validate(document, source=str(path))
    root = docs(files, "kustomization.yaml")[0]
    assert root["resources"] == ["platform/rbac.yaml", "tenants/acme.yaml", "tenants/globex.yaml"]


def test_organization_gets_its_flux_namespace_source_kustomization_and_receiver() -> None:
    spec = factories.platform()
    acme = spec.organizations[0]
    documents = docs(render_platform(spec), "tenants/acme.yaml")
    system = [d for d in documents if d["metadata"].get("namespace") == "acme--system"]
    assert {(d["kind"], d["metadata"]["name"]) for d in system} == {
        ("ServiceAccount", "flux"),
        ("GitRepository", "acme"),
        ("Kustomization", "host"),
        ("Receiver", "acme"),
    }
    source = by_kind(documents, "GitRepository")[0]
    assert source["spec"]["url"] == f"http://git.hexabase.test/repos/{acme.id}.git"
    assert source["spec"]["url"] == tenant_repo_url(spec.git_base_url, acme.id)
    assert source["spec"]["ref"] == {"branch": "main"}
    host = by_kind(documents, "Kustomization")[0]["spec"]
    assert host["path"] == "./host" and host["prune"] is True
    assert host["serviceAccountName"] == "flux"
    assert host["sourceRef"] == {"kind": "GitRepository", "name": "acme"}
    receiver = by_kind(documents, "Receiver")[0]
    assert (receiver["metadata"]["name"], receiver["metadata"]["namespace"]) == (
        tenant_receiver("acme").name,
        tenant_receiver("acme").namespace,
    )
    assert receiver["spec"]["type"] == "github" and receiver["spec"]["events"] == ["push"]
    assert receiver["spec"]["secretRef"] == {"name": "receiver-token"}
    assert receiver["spec"]["resources"] == [
        {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "name": "acme"}
    ]
    namespaces = {d["metadata"]["name"]: d for d in by_kind(documents, "Namespace")}
    assert sorted(namespaces) == ["acme--dev", "acme--prod", "acme--system"]
    assert all(ns["metadata"]["labels"]["owner"] == "acme" for ns in namespaces.values())
    assert all("--" in name for name in namespaces)


def test_service_account_may_touch_only_its_own_workspace_namespaces() -> None:
    files = render_platform(factories.platform())
    acme = docs(files, "tenants/acme.yaml")
    (role,) = [d for d in by_kind(acme, "ClusterRole") if d["metadata"]["name"].endswith("acme")]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["namespaces"],
            "resourceNames": ["acme--dev", "acme--prod"],
            "verbs": ["get", "patch", "update", "delete"],
        }
    ]
    (binding,) = [
        d
        for d in by_kind(acme, "ClusterRoleBinding")
        if d["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "flux", "namespace": "acme--system"}
    ]
    # Cluster-wide tenant rights come only from RoleBindings inside the org's namespaces.
    for rb in by_kind(acme, "RoleBinding"):
        assert rb["metadata"]["namespace"] in ("acme--dev", "acme--prod")
        assert rb["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "hexabase:tenant-host",
        }
        assert {s["namespace"] for s in rb["subjects"]} == {
            "acme--system",
            rb["metadata"]["namespace"],
        }
    # An organization without workspaces: no rule at all (an empty resourceNames is "all").
    globex = docs(files, "tenants/globex.yaml")
    (empty,) = by_kind(globex, "ClusterRole")
    assert empty["rules"] == []
    assert by_kind(globex, "RoleBinding") == []


def test_tenant_host_role_is_namespaced_rights_only() -> None:
    (tenant_host, nodes) = docs(render_platform(factories.platform()), "platform/rbac.yaml")
    assert tenant_host["metadata"]["name"] == "hexabase:tenant-host"
    resources = {(g, r) for rule in tenant_host["rules"] for g in rule["apiGroups"]
                 for r in rule["resources"]}  # fmt: skip
    for cluster_scoped in [("", "namespaces"), ("", "nodes"),
                           ("rbac.authorization.k8s.io", "clusterroles"),
                           ("rbac.authorization.k8s.io", "clusterrolebindings")]:  # fmt: skip
        assert cluster_scoped not in resources
    assert not any("*" in rule["verbs"] or "escalate" in rule["verbs"] or "bind" in rule["verbs"]
                   or "impersonate" in rule["verbs"] for rule in tenant_host["rules"])  # fmt: skip
    for needed in [("helm.toolkit.fluxcd.io", "helmreleases"),
                   ("kustomize.toolkit.fluxcd.io", "kustomizations"),
                   ("source.toolkit.fluxcd.io", "gitrepositories"),
                   ("source.toolkit.fluxcd.io", "helmrepositories"),
                   ("source.toolkit.fluxcd.io", "ocirepositories"), ("", "secrets"),
                   ("", "configmaps"), ("", "serviceaccounts"), ("apps", "statefulsets"),
                   ("rbac.authorization.k8s.io", "roles"), ("", "pods/exec")]:  # fmt: skip
        assert needed in resources, needed
    assert nodes["metadata"]["name"] == "hexabase:vcluster-nodes"


def test_dedicated_node_workspace_gets_the_node_rights_its_chart_may_not_create() -> None:
    acme = docs(render_platform(factories.platform()), "tenants/acme.yaml")
    (binding,) = [d for d in by_kind(acme, "ClusterRoleBinding")
                  if d["roleRef"]["name"] == "hexabase:vcluster-nodes"]  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vc-vcluster", "namespace": "acme--prod"}
    ]
    tenant = render(factories.small_org())
    prod = yamlio.load_all(tenant[PurePosixPath("host/workspaces/prod/vcluster.yaml")].decode())
    assert prod[1]["spec"]["values"]["rbac"] == {"clusterRole": {"enabled": False}}
    dev = yamlio.load_all(tenant[PurePosixPath("host/workspaces/dev/vcluster.yaml")].decode())
    assert "rbac" not in dev[1]["spec"]["values"]


def test_tenant_repository_refers_to_the_platform_source_and_namespace_labels() -> None:
    tenant_spec = factories.small_org()
    org = tenant_spec.organization
    platform = PlatformSpec(
        git_base_url="http://git.test",
        organizations=(
            PlatformOrganizationSpec(
                id=org.id,
                name=org.name,
                workspaces=tuple(PlatformWorkspaceSpec(name=w.name)
                                 for w in tenant_spec.workspaces),
            ),
        ),
    )  # fmt: skip
    platform_docs = docs(render_platform(platform), f"tenants/{org.name}.yaml")
    source = by_kind(platform_docs, "GitRepository")[0]["metadata"]
    tenant = render(tenant_spec)
    refs = [
        d["spec"]["sourceRef"]
        for path, data in tenant.items()
        if path.parts[0] == "host"
        for d in yamlio.load_all(data.decode())
        if d["kind"] == "Kustomization" and d["apiVersion"].startswith("kustomize.toolkit")
    ]
    assert refs and all(
        ref == {"kind": "GitRepository", "name": source["name"], "namespace": source["namespace"]}
        for ref in refs
    )
    releases = [d for path, data in tenant.items() if path.suffix == ".yaml"
                for d in yamlio.load_all(data.decode()) if d["kind"] == "HelmRelease"]  # fmt: skip
    assert releases and all(r["spec"]["serviceAccountName"] == "flux" for r in releases)
    # Both repositories write the workspace Namespace with the same labels: no tug of war.
    platform_ns = {d["metadata"]["name"]: d for d in by_kind(platform_docs, "Namespace")}
    for ws in tenant_spec.workspaces:
        ns = yamlio.load(
            tenant[PurePosixPath(f"host/workspaces/{ws.name}/namespace.yaml")].decode()
        )
        mine = platform_ns[ns["metadata"]["name"]]
        assert mine["metadata"]["labels"] == ns["metadata"]["labels"]
        assert mine["metadata"]["annotations"] == {
            "kustomize.toolkit.fluxcd.io/ssa": "IfNotPresent"
        }


@pytest.mark.parametrize(
    ("path", "managed"),
    [
        ("README.md", True),
        ("kustomization.yaml", True),
        ("platform/rbac.yaml", True),
        ("tenants/acme.yaml", True),
        ("flux-system/gotk-components.yaml", False),
        ("addons/kyverno.yaml", False),
        ("hexabase.yaml", False),
        ("/tenants/acme.yaml", False),
        ("tenants/../flux-system/x.yaml", False),
    ],
)
def test_is_managed(path: str, managed: bool) -> None:
    assert is_managed(PurePosixPath(path)) is managed


def test_receiver_token_never_reaches_git_and_its_secret_is_valid() -> None:
    token = "a-very-secret-receiver-token"
    secret = receiver_token_secret("acme", token)
    schema.validate(secret, source="receiver-token")
    assert secret["metadata"] == {
        "name": "receiver-token",
        "namespace": "acme--system",
        "labels": {"app.kubernetes.io/managed-by": "hexabase", "owner": "acme"},
    }
    assert secret["stringData"] == {"token": token}
    files = render_platform(factories.platform())
    assert not any(token.encode() in data for data in files.values())


def test_workspace_named_system_is_refused() -> None:
    with pytest.raises(ValueError, match="'system' is reserved"):
        factories.workspace("system", id="w")
    with pytest.raises(ValueError, match="'system' is reserved"):
        PlatformWorkspaceSpec(name="system")
    factories.workspace("systems", id="w")  # only the exact name is reserved


def test_duplicate_organizations_are_refused() -> None:
    org = factories.platform().organizations[0]
    with pytest.raises(ValueError, match="share a name or an id"):
        render_platform(PlatformSpec(git_base_url="http://git.test", organizations=(org, org)))
