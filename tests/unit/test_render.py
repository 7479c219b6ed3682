"""Renderer tests: golden tenant repository, determinism, layout, managed paths, schema checks.

Covers:
- the rendered repository of `factories.small_org()` equals tests/golden/small-org/ byte for
  byte (after an intended change, regenerate with
  `HEXABASE_UPDATE_GOLDEN=1 pytest tests/unit/test_render.py` and review the diff);
- same spec -> identical bytes, and a spec built in a different order -> identical bytes;
- every managed file starts with the managed header, parses, and each document passes its schema;
- deleting a project removes exactly its paths; nothing is ever rendered under apps/;
- `is_managed` owns host/ and workspaces/ but never a project's apps/;
- specs the renderer cannot turn into a valid repository fail with an error naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from reconciler import schema, yamlio
from reconciler.render import (
    MANAGED_HEADER,
    RenderError,
    host_namespace,
    is_managed,
    render,
    skeleton_files,
)
from reconciler.spec import ProjectRoleBindingSpec
from tests import factories

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
UPDATE = os.environ.get("HEXABASE_UPDATE_GOLDEN") == "1"


def _golden_case(name: str, files: dict[PurePosixPath, bytes]) -> None:
    root = GOLDEN / name
    if UPDATE:
        for old in sorted(root.rglob("*"), reverse=True) if root.exists() else []:
            old.unlink() if old.is_file() else old.rmdir()
        for path, data in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    on_disk = {
        PurePosixPath(p.relative_to(root).as_posix()): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
    }
    assert sorted(on_disk) == sorted(files), "rendered paths differ from the golden files"
    for path, data in files.items():
        assert on_disk[path].decode() == data.decode(), f"{path} differs from its golden file"


def test_small_org_matches_golden_files() -> None:
    _golden_case("small-org", render(factories.small_org()))


def test_same_spec_renders_identical_bytes() -> None:
    assert render(factories.small_org()) == render(factories.small_org())


def test_spec_order_does_not_change_bytes() -> None:
    spec = factories.small_org()
    reordered = spec.model_copy(
        update={
            "workspaces": tuple(
                w.model_copy(update={"projects": tuple(reversed(w.projects))})
                for w in reversed(spec.workspaces)
            )
        }
    )
    assert render(reordered) == render(spec)


def test_every_managed_file_has_header_and_valid_documents() -> None:
    for path, data in render(factories.small_org()).items():
        text = data.decode("utf-8")
        if path.suffix != ".yaml":
            continue
        assert text.startswith(MANAGED_HEADER), path
        documents = yamlio.load_all(text)
        assert documents, path
        for document in documents:
            if path != PurePosixPath("hexabase.yaml"):
                schema.validate(document, source=str(path))


def test_rendered_files_are_already_canonical() -> None:
    for path, data in render(factories.small_org()).items():
        if path.suffix == ".yaml":
            body = data.decode()[len(MANAGED_HEADER) :]
            assert yamlio.dump_all(yamlio.load_all(body)) == body, path


def test_deleting_a_project_removes_exactly_its_paths() -> None:
    spec = factories.small_org()
    dev = spec.workspaces[0]
    assert {p.name for p in dev.projects} == {"web", "api"}
    without_api = spec.model_copy(
        update={
            "workspaces": (
                dev.model_copy(
                    update={"projects": tuple(p for p in dev.projects if p.name != "api")}
                ),
                *spec.workspaces[1:],
            )
        }
    )
    before, after = render(spec), render(without_api)
    removed = set(before) - set(after)
    prefix = "workspaces/dev/projects/api/"
    apps_sync = PurePosixPath("host/workspaces/dev/project-apps/api.yaml")
    assert removed and all(str(p).startswith(prefix) or p == apps_sync for p in removed)
    assert apps_sync in removed
    assert not any(str(p).startswith(prefix) for p in after)
    # The files that listed the project changed; nothing else did.
    changed = {p for p in after if before[p] != after[p]}
    assert changed == {
        PurePosixPath("workspaces/dev/kustomization.yaml"),
        PurePosixPath("host/workspaces/dev/kustomization.yaml"),
    }


def test_nothing_is_rendered_under_apps() -> None:
    for path in render(factories.small_org()):
        assert "apps" not in path.parts, path
        assert is_managed(path) or path in {
            PurePosixPath("README.md"),
            PurePosixPath("hexabase.yaml"),
        }


@pytest.mark.parametrize(
    ("path", "managed"),
    [
        ("host/kustomization.yaml", True),
        ("host/workspaces/dev/vcluster.yaml", True),
        ("workspaces/dev/rbac/clusterroles.yaml", True),
        ("workspaces/dev/projects/web/namespace.yaml", True),
        ("workspaces/dev/projects/web/apps", False),
        ("workspaces/dev/projects/web/apps/deployment.yaml", False),
        ("workspaces/dev/projects/web/apps/nested/deep/x.yaml", False),
        ("workspaces/dev/projects/apps/namespace.yaml", True),  # a project named "apps"
        ("workspaces/dev/projects/apps/apps/x.yaml", False),
        ("README.md", True),
        ("hexabase.yaml", True),
        ("other/file.yaml", False),
        ("host", False),
        ("/host/kustomization.yaml", False),
        ("host/../workspaces/dev/projects/web/apps/x.yaml", False),
    ],
)
def test_is_managed(path: str, managed: bool) -> None:
    assert is_managed(PurePosixPath(path)) is managed


def test_host_layout_names_are_consistent() -> None:
    files = render(factories.tenant())
    sync = yamlio.load_all(files[PurePosixPath("host/workspaces/dev/sync.yaml")].decode())
    release = yamlio.load_all(files[PurePosixPath("host/workspaces/dev/vcluster.yaml")].decode())[1]
    namespace = yamlio.load(files[PurePosixPath("host/workspaces/dev/namespace.yaml")].decode())
    assert namespace["metadata"]["name"] == "acme--dev"
    assert namespace["metadata"]["labels"]["owner"] == "acme"
    workspace_ks = sync[0]
    assert workspace_ks["spec"]["path"] == "./workspaces/dev"
    assert workspace_ks["spec"]["prune"] is True
    assert workspace_ks["spec"]["sourceRef"] == {
        "kind": "GitRepository", "name": "acme", "namespace": "acme--system"
    }  # fmt: skip
    secret = workspace_ks["spec"]["kubeConfig"]["secretRef"]
    assert secret == {"name": f"vc-{release['metadata']['name']}", "key": "config"}
    values = release["spec"]["values"]
    assert values["exportKubeConfig"]["server"] == "https://vcluster.acme--dev.svc:443"
    args = values["controlPlane"]["distro"]["k8s"]["apiServer"]["extraArgs"]
    assert "--oidc-client-id=ws-dev" in args
    assert "--oidc-groups-prefix=oidc:" in args
    assert "--oidc-issuer-url=https://hexabase.example.com/oidc" in args
    assert release["spec"]["chart"]["spec"]["version"] == "0.36.1"
    assert "sync" not in values  # shared plan: no node sync, no enforced tolerations
    host_ks = yamlio.load(files[PurePosixPath("host/kustomization.yaml")].decode())
    assert host_ks["resources"] == ["workspaces/dev"]


def test_workspace_admins_are_bound_by_default_with_oidc_prefix() -> None:
    files = render(factories.tenant())
    docs = yamlio.load_all(
        files[PurePosixPath("workspaces/dev/rbac/clusterrolebindings.yaml")].decode()
    )
    pairs = {(d["subjects"][0]["name"], d["roleRef"]["name"]) for d in docs}
    assert pairs == {
        ("oidc:WSAdmins", "hexabase:workspace-admin"),
        ("oidc:WSUsers", "hexabase:workspace-viewer"),
    }


def test_project_kustomization_lists_its_files_but_not_apps() -> None:
    files = render(factories.small_org())
    ks = yamlio.load(
        files[PurePosixPath("workspaces/dev/projects/web/kustomization.yaml")].decode()
    )
    listed = set(ks["resources"])
    on_disk = {
        str(p.relative_to("workspaces/dev/projects/web"))
        for p in files
        if str(p).startswith("workspaces/dev/projects/web/") and p.name != "kustomization.yaml"
    }
    assert listed == on_disk
    assert not any(r.startswith("apps") for r in listed)


def test_skeleton_files_describe_the_layout() -> None:
    files = skeleton_files(factories.tenant().organization)
    meta = yamlio.load(files[PurePosixPath("hexabase.yaml")].decode())
    assert meta["organization"] == {"id": "org-1234", "name": "acme"}
    assert meta["managedPaths"] == ["host/**", "workspaces/**"]
    assert meta["unmanagedPaths"] == ["workspaces/*/projects/*/apps/**"]
    assert "apps/" in files[PurePosixPath("README.md")].decode()


def test_duplicate_project_names_are_an_error_naming_the_file() -> None:
    spec = factories.tenant(
        workspaces=(
            factories.workspace(projects=(factories.project("web"), factories.project("web"))),
        )
    )
    with pytest.raises(
        RenderError, match=r"workspaces/dev/(projects|project-apps)/web.*rendered twice"
    ):
        render(spec)


def test_binding_to_an_undefined_role_is_an_error() -> None:
    project = factories.project(
        "web", bindings=(ProjectRoleBindingSpec(group="Devs", role_kind="Role", role="missing"),)
    )
    with pytest.raises(RenderError, match=r"rolebindings\.yaml.*'missing'"):
        render(factories.tenant(workspaces=(factories.workspace(projects=(project,)),)))


def test_tenant_names_cannot_make_colliding_or_overlong_host_namespaces() -> None:
    # org "a" + workspace "b-c" and org "a-b" + workspace "c" would both be "a-b-c" with one
    # dash; with "--" forbidden inside names, "<org>--<ws>" keeps them apart.
    a = factories.OrganizationSpec(id="o1", name="a")
    ab = factories.OrganizationSpec(id="o2", name="a-b")
    assert host_namespace(a, factories.workspace("b-c", id="w1")) != host_namespace(
        ab, factories.workspace("c", id="w2")
    )
    for bad in ("a--b", "o" * 31):
        with pytest.raises(ValueError, match="without '--'"):
            factories.OrganizationSpec(id="o", name=bad)
        with pytest.raises(ValueError, match="without '--'"):
            factories.workspace(bad, id="w")
