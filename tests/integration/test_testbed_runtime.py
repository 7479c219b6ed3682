"""The test bed at run time: real etcd, kube-apiserver, kube-controller-manager, the four Flux
controllers, a Git smart-HTTP server, a Helm repository with the vCluster chart, and the
vCluster stand-in. Nothing is mocked; a binary that cannot be built fails the run.

Covers, in order (module-scoped fixtures, one test bed for the whole file):
- the host API server reports v1.36.3; the Flux, Knative Serving and Kyverno CRDs are
  Established; a deleted Namespace is finalized (kube-controller-manager works);
- Flux fetches a tenant repository over smart HTTP and applies a ConfigMap; a commit that
  removes it gets it pruned; a manifest the API server rejects fails the Kustomization;
- helm-controller installs the vCluster chart 0.36.1 from the local Helm repository and the
  HelmRelease becomes Ready; the stand-in started a workspace API server with the OIDC flags
  of the HelmRelease's values and wrote its kubeconfig into Secret ``vc-vcluster``;
  a Kustomization with ``spec.kubeConfig.secretRef`` applies into that workspace API server;
  deleting the HelmRelease stops the workspace API server.

Figures (startup time, memory, HelmRelease-to-Ready) are printed to stderr (run with -s).
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from api.testbed.chartrepo import ChartRepository
from api.testbed.cluster import HostCluster, api_client_from_kubeconfig, as_body
from api.testbed.flux import FluxControllers
from api.testbed.gitserver import GitHttpServer
from api.testbed.tools import VCLUSTER_CHART_VERSION
from api.testbed.vcluster import VClusterStandIn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

T = TypeVar("T")

OIDC_ARGS = [
    "--oidc-issuer-url=https://hexabase.example.com/oidc",
    "--oidc-client-id=ws-dev",
    "--oidc-username-claim=email",
    "--oidc-username-prefix=oidc:",
    "--oidc-groups-claim=groups",
    "--oidc-groups-prefix=oidc:",
]
WS_NAMESPACE = "acme--dev"
FIGURES: dict[str, float] = {}


def note(msg: str) -> None:
    print(f"[test_testbed_runtime] {msg}", file=sys.stderr, flush=True)


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except ApiException as exc:
            last_error, result = exc, None
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error!r})")


def condition(obj: Mapping[str, Any], kind: str = "Ready") -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def is_ready(obj: Mapping[str, Any]) -> bool:
    cond = condition(obj)
    return bool(cond and cond["status"] == "True")


# ---- Flux objects -------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str
    version: str
    plural: str


GIT_REPOSITORY = Kind("GitRepository", "source.toolkit.fluxcd.io", "v1", "gitrepositories")
HELM_REPOSITORY = Kind("HelmRepository", "source.toolkit.fluxcd.io", "v1", "helmrepositories")
KUSTOMIZATION = Kind("Kustomization", "kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
HELM_RELEASE = Kind("HelmRelease", "helm.toolkit.fluxcd.io", "v2", "helmreleases")


class Objects:
    """Create, read, patch and delete Flux custom objects on the host."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.custom = k8s.CustomObjectsApi(api)

    def apply(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> None:
        body = {"apiVersion": f"{kind.group}/{kind.version}", "kind": kind.kind, **body}
        self.custom.create_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, as_body(body)
        )

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        obj: Any = self.custom.get_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name
        )
        return dict(obj)

    def get_or_none(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def request_reconcile(self, kind: Kind, namespace: str, name: str) -> None:
        """What ``flux reconcile`` does: annotate reconcile.fluxcd.io/requestedAt."""
        patch = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": str(time.time())}}}
        self.custom.patch_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name, as_body(patch)
        )

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name
        )

    def wait_ready(
        self, kind: Kind, namespace: str, name: str, *, timeout: float
    ) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            obj = self.get_or_none(kind, namespace, name)
            return obj if obj is not None and is_ready(obj) else None

        try:
            return wait_for(ready, timeout=timeout, what=f"{kind.plural} {namespace}/{name} Ready")
        except AssertionError as exc:
            obj = self.get_or_none(kind, namespace, name) or {}
            raise AssertionError(f"{exc}; status: {obj.get('status')}") from None


# ---- a tenant repository, written with the real git CLI -----------------------------------


class TenantRepo:
    """A bare repository under the Git server's directory, and a work tree that commits to it."""

    def __init__(self, repos_dir: Path, work_root: Path, name: str) -> None:
        self.bare = repos_dir / f"{name}.git"
        self.work = work_root / name
        self._git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        self._git("init", "--quiet", "--initial-branch=main", str(self.work))
        self._git("-C", str(self.work), "remote", "add", "origin", str(self.bare))

    @staticmethod
    def _git(*args: str) -> str:
        proc = subprocess.run(
            ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
        return proc.stdout.strip()

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        """Write (or, for None, delete) ``files``; commit; push main; return the sha."""
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        self._git("-C", str(self.work), "add", "--all")
        self._git("-C", str(self.work), "commit", "--quiet", "-m", message)
        self._git("-C", str(self.work), "push", "--quiet", "origin", "main")
        return self._git("-C", str(self.work), "rev-parse", "HEAD")


def manifest(*docs: Mapping[str, Any]) -> str:
    return "---\n".join(yaml.safe_dump(dict(d), sort_keys=False) for d in docs)


def configmap(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def kustomize(*resources: str) -> str:
    return manifest(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": list(resources),
        }
    )


# ---- fixtures: one test bed for the module --------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("testbed")


@pytest.fixture(scope="module")
def host(workdir: Path) -> Iterator[HostCluster]:
    start = time.monotonic()
    note("starting etcd, kube-apiserver, kube-controller-manager")
    cluster = HostCluster.start(workdir / "cluster")
    try:
        cluster.install_crds()
        FIGURES["host_up_s"] = time.monotonic() - start
        note(f"host cluster up with CRDs in {FIGURES['host_up_s']:.1f}s")
        yield cluster
    finally:
        cluster.stop()
    leftovers = [p.name for p in cluster.processes() if p.running]
    assert not leftovers, f"still running after stop(): {leftovers}"


@pytest.fixture(scope="module")
def api(host: HostCluster) -> Iterator[k8s.ApiClient]:
    with host.api_client() as client:
        yield client


@pytest.fixture(scope="module")
def objects(api: k8s.ApiClient) -> Objects:
    return Objects(api)


@pytest.fixture(scope="module")
def flux(host: HostCluster, api: k8s.ApiClient, workdir: Path) -> Iterator[FluxControllers]:
    start = time.monotonic()
    k8s.CoreV1Api(api).create_namespace(as_body({"metadata": {"name": "flux-system"}}))
    controllers = FluxControllers.start(workdir / "flux", host.kubeconfig)
    FIGURES["flux_up_s"] = time.monotonic() - start
    note(f"Flux controllers ready in {FIGURES['flux_up_s']:.1f}s")
    yield controllers
    controllers.stop()
    assert not [p for p in controllers.processes.values() if p.running]


@pytest.fixture(scope="module")
def git_server(workdir: Path) -> Iterator[GitHttpServer]:
    repos = workdir / "repos"
    repos.mkdir()
    server = GitHttpServer.start(repos)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tenant_repo(git_server: GitHttpServer, workdir: Path) -> TenantRepo:
    return TenantRepo(git_server.repos_dir, workdir / "work", "acme")


@pytest.fixture(scope="module")
def chart_repo(workdir: Path) -> Iterator[ChartRepository]:
    repo = ChartRepository.start(workdir / "charts")
    yield repo
    repo.stop()


@pytest.fixture(scope="module")
def standin(host: HostCluster) -> Iterator[VClusterStandIn]:
    controller = VClusterStandIn.start(host, resync=2.0)
    yield controller
    controller.stop()


@pytest.fixture(scope="module")
def git_source(
    flux: FluxControllers, objects: Objects, git_server: GitHttpServer, tenant_repo: TenantRepo
) -> str:
    """GitRepository flux-system/acme over smart HTTP, Ready on the first commit."""
    tenant_repo.commit(
        {
            "host/kustomization.yaml": kustomize("configmap.yaml"),
            "host/configmap.yaml": manifest(configmap("tenant-config", "default", hello="world")),
        },
        "first commit",
    )
    objects.apply(
        GIT_REPOSITORY,
        "flux-system",
        {
            "metadata": {"name": "acme", "namespace": "flux-system"},
            "spec": {
                "interval": "1m",
                "url": git_server.repo_url("acme"),
                "ref": {"branch": "main"},
            },
        },
    )
    objects.wait_ready(GIT_REPOSITORY, "flux-system", "acme", timeout=60)
    return "acme"


def kustomization(name: str, namespace: str, path: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "interval": "1m",
            "retryInterval": "5s",
            "path": path,
            "prune": True,
            "timeout": "30s",
            "sourceRef": {"kind": "GitRepository", "name": "acme", "namespace": "flux-system"},
            **spec,
        },
    }


# ---- host cluster ----------------------------------------------------------------------------


def test_host_apiserver_reports_the_built_release(host: HostCluster) -> None:
    kubeconfig = yaml.safe_load(host.kubeconfig.read_text())
    user = kubeconfig["users"][0]["user"]
    assert set(user) == {"client-certificate-data", "client-key-data"}  # embedded, no paths
    with api_client_from_kubeconfig(host.kubeconfig) as client:
        assert k8s.VersionApi(client).get_code().git_version == "v1.36.3"


@pytest.mark.parametrize(
    "crd",
    [
        "gitrepositories.source.toolkit.fluxcd.io",
        "helmrepositories.source.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
        "helmreleases.helm.toolkit.fluxcd.io",
        "receivers.notification.toolkit.fluxcd.io",
        "services.serving.knative.dev",
        "clusterpolicies.kyverno.io",
    ],
)
def test_crds_are_established(api: k8s.ApiClient, crd: str) -> None:
    found = k8s.ApiextensionsV1Api(api).read_custom_resource_definition(crd)
    conditions = (found.status and found.status.conditions) or []
    assert any(c.type == "Established" and c.status == "True" for c in conditions)


def test_deleted_namespace_is_finalized_by_the_controller_manager(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespace(as_body({"metadata": {"name": "short-lived"}}))
    core.create_namespaced_config_map(
        "short-lived", as_body(configmap("inside", "short-lived", a="b"))
    )
    core.delete_namespace("short-lived")

    def gone() -> bool:
        try:
            core.read_namespace("short-lived")
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for(gone, timeout=60, what="Namespace short-lived to be finalized")


# ---- Flux on the host --------------------------------------------------------------------------


def test_flux_applies_a_commit_and_prunes_what_a_later_commit_removes(
    api: k8s.ApiClient, objects: Objects, tenant_repo: TenantRepo, git_source: str
) -> None:
    core = k8s.CoreV1Api(api)
    objects.apply(KUSTOMIZATION, "flux-system", kustomization("acme-host", "flux-system", "./host"))
    applied = objects.wait_ready(KUSTOMIZATION, "flux-system", "acme-host", timeout=60)
    cm = core.read_namespaced_config_map("tenant-config", "default")
    assert cm.data == {"hello": "world"}

    sha = tenant_repo.commit(
        {"host/configmap.yaml": None, "host/kustomization.yaml": kustomize()}, "remove it"
    )
    assert sha not in applied["status"]["lastAppliedRevision"]
    objects.request_reconcile(GIT_REPOSITORY, "flux-system", git_source)

    def pruned() -> bool:
        ks = objects.get(KUSTOMIZATION, "flux-system", "acme-host")
        if sha not in (ks.get("status") or {}).get("lastAppliedRevision", ""):
            return False
        try:
            core.read_namespaced_config_map("tenant-config", "default")
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    wait_for(pruned, timeout=60, what=f"revision {sha[:8]} applied and the ConfigMap pruned")


def test_a_manifest_the_api_server_rejects_fails_the_kustomization(
    objects: Objects, tenant_repo: TenantRepo, git_source: str
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {"hard": {"pods": "a-lot"}},  # not a quantity: the API server refuses it
    }
    sha = tenant_repo.commit(
        {
            "broken/kustomization.yaml": kustomize("quota.yaml"),
            "broken/quota.yaml": manifest(quota),
        },
        "a quota the schema refuses",
    )
    objects.request_reconcile(GIT_REPOSITORY, "flux-system", git_source)
    wait_for(
        lambda: (
            sha
            in objects.get(GIT_REPOSITORY, "flux-system", git_source)["status"]["artifact"][
                "revision"
            ]
        ),
        timeout=60,
        what="the GitRepository to fetch the broken commit",
    )
    objects.apply(
        KUSTOMIZATION, "flux-system", kustomization("acme-broken", "flux-system", "./broken")
    )

    def failed() -> Mapping[str, Any] | None:
        ready = condition(objects.get(KUSTOMIZATION, "flux-system", "acme-broken"))
        return ready if ready and ready["status"] == "False" else None

    ready = wait_for(failed, timeout=60, what="Kustomization acme-broken Ready=False")
    note(f"rejected manifest: {ready['reason']}: {ready['message'][:200]}")
    assert "ResourceQuota/default/broken" in ready["message"]
    ks = objects.get(KUSTOMIZATION, "flux-system", "acme-broken")
    assert "lastAppliedRevision" not in ks["status"]
    objects.delete(KUSTOMIZATION, "flux-system", "acme-broken")


# ---- vCluster: helm-controller installs the real chart; the stand-in serves the API -----------


@dataclass
class WorkspaceRelease:
    ready_after_s: float
    kubeconfig: bytes


@pytest.fixture(scope="module")
def workspace_release(
    host: HostCluster,
    api: k8s.ApiClient,
    objects: Objects,
    flux: FluxControllers,
    chart_repo: ChartRepository,
    standin: VClusterStandIn,
) -> WorkspaceRelease:
    k8s.CoreV1Api(api).create_namespace(as_body({"metadata": {"name": WS_NAMESPACE}}))
    start = time.monotonic()
    objects.apply(
        HELM_REPOSITORY,
        WS_NAMESPACE,
        {
            "metadata": {"name": "loft", "namespace": WS_NAMESPACE},
            "spec": {"interval": "24h", "url": chart_repo.url},
        },
    )
    objects.apply(
        HELM_RELEASE,
        WS_NAMESPACE,
        {
            "metadata": {"name": "vcluster", "namespace": WS_NAMESPACE},
            "spec": {
                "interval": "30m",
                "releaseName": "vcluster",
                "chart": {
                    "spec": {
                        "chart": "vcluster",
                        "version": VCLUSTER_CHART_VERSION,
                        "sourceRef": {"kind": "HelmRepository", "name": "loft"},
                    }
                },
                "install": {"timeout": "3m", "remediation": {"retries": 3}},
                "values": {
                    "controlPlane": {
                        "distro": {"k8s": {"enabled": True, "apiServer": {"extraArgs": OIDC_ARGS}}},
                        "proxy": {"extraSANs": [f"vcluster.{WS_NAMESPACE}.svc"]},
                    },
                    "exportKubeConfig": {"server": f"https://vcluster.{WS_NAMESPACE}.svc:443"},
                    "policies": {
                        "resourceQuota": {"enabled": True, "quota": {"pods": "50"}},
                        "limitRange": {"enabled": True},
                    },
                },
            },
        },
    )
    note("HelmRelease acme--dev/vcluster created; waiting for helm-controller")
    objects.wait_ready(HELM_RELEASE, WS_NAMESPACE, "vcluster", timeout=240)
    ready_after = time.monotonic() - start
    FIGURES["helmrelease_ready_s"] = ready_after
    note(f"HelmRelease Ready {ready_after:.1f}s after creation")
    secret = k8s.CoreV1Api(api).read_namespaced_secret("vc-vcluster", WS_NAMESPACE)
    assert secret.data is not None
    return WorkspaceRelease(ready_after, base64.b64decode(secret.data["config"]))


def test_helmrelease_is_installed_by_helm_controller_and_ready(
    api: k8s.ApiClient, objects: Objects, workspace_release: WorkspaceRelease
) -> None:
    hr = objects.get(HELM_RELEASE, WS_NAMESPACE, "vcluster")
    history = hr["status"]["history"]
    assert history[0]["chartName"] == "vcluster"
    assert history[0]["chartVersion"] == VCLUSTER_CHART_VERSION
    assert history[0]["status"] == "deployed"
    sts = k8s.AppsV1Api(api).read_namespaced_stateful_set("vcluster", WS_NAMESPACE)
    assert sts.metadata is not None and sts.metadata.labels is not None
    assert sts.metadata.labels["app"] == "vcluster"
    assert sts.status is not None and sts.status.ready_replicas == 1


def test_exported_kubeconfig_reaches_the_workspace_apiserver_started_with_oidc_flags(
    standin: VClusterStandIn, workspace_release: WorkspaceRelease
) -> None:
    config = yaml.safe_load(workspace_release.kubeconfig)
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    assert "certificate-authority-data" in cluster and "client-key-data" in user
    assert not {"certificate-authority", "client-certificate", "client-key"} & {*cluster, *user}
    with api_client_from_kubeconfig(workspace_release.kubeconfig) as client:
        names = {
            ns.metadata.name for ns in k8s.CoreV1Api(client).list_namespace().items if ns.metadata
        }
    assert {"default", "kube-system"} <= names
    assert WS_NAMESPACE not in names  # its own etcd prefix: not the host's objects

    workspace = standin.workspace(WS_NAMESPACE, "vcluster")
    assert workspace is not None
    argv = Path(f"/proc/{workspace.pid}/cmdline").read_bytes().decode().split("\0")
    assert all(arg in argv for arg in OIDC_ARGS), argv
    assert f"--etcd-prefix=/workspaces/{WS_NAMESPACE}.vcluster" in argv


def test_kustomization_with_kubeconfig_secret_applies_into_the_workspace(
    host: HostCluster,
    flux: FluxControllers,
    objects: Objects,
    tenant_repo: TenantRepo,
    git_source: str,
    standin: VClusterStandIn,
    workspace_release: WorkspaceRelease,
) -> None:
    sha = tenant_repo.commit(
        {
            "workspaces/dev/kustomization.yaml": kustomize("ns.yaml"),
            "workspaces/dev/ns.yaml": manifest(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}},
                configmap("inside-workspace", "web", applied="by-flux"),
            ),
        },
        "workspace content",
    )
    objects.request_reconcile(GIT_REPOSITORY, "flux-system", git_source)
    objects.apply(
        KUSTOMIZATION,
        WS_NAMESPACE,
        kustomization(
            "hexabase.workspace",
            WS_NAMESPACE,
            "./workspaces/dev",
            kubeConfig={"secretRef": {"name": "vc-vcluster", "key": "config"}},
        ),
    )

    def applied() -> bool:
        ks = objects.get(KUSTOMIZATION, WS_NAMESPACE, "hexabase.workspace")
        return is_ready(ks) and sha in ks["status"].get("lastAppliedRevision", "")

    wait_for(applied, timeout=90, what="Kustomization hexabase.workspace Ready at the new commit")
    with api_client_from_kubeconfig(workspace_release.kubeconfig) as client:
        cm = k8s.CoreV1Api(client).read_namespaced_config_map("inside-workspace", "web")
    assert cm.data == {"applied": "by-flux"}

    rss = host.rss_bytes() + flux.rss_bytes()
    FIGURES["testbed_rss_mib"] = rss / 2**20
    note(f"test bed RSS (host, one workspace API server, Flux): {rss / 2**20:.0f} MiB")
    for proc in [*host.processes(), *flux.processes.values()]:
        note(f"  {proc.name}: {proc.rss_bytes() / 2**20:.0f} MiB")
    # Deleting a pruning Kustomization deletes what it applied; the workspace's own
    # kube-controller-manager finalizes the Namespace.
    objects.delete(KUSTOMIZATION, WS_NAMESPACE, "hexabase.workspace")
    with api_client_from_kubeconfig(workspace_release.kubeconfig) as client:
        core = k8s.CoreV1Api(client)

        def namespace_gone() -> bool:
            try:
                core.read_namespace("web")
            except ApiException as exc:
                return bool(exc.status == 404)
            return False

        wait_for(namespace_gone, timeout=60, what="Namespace web pruned in the workspace")


def test_changed_values_restart_the_workspace_apiserver_with_the_new_flags(
    api: k8s.ApiClient,
    objects: Objects,
    standin: VClusterStandIn,
    workspace_release: WorkspaceRelease,
) -> None:
    before = standin.workspace(WS_NAMESPACE, "vcluster")
    assert before is not None
    with api_client_from_kubeconfig(workspace_release.kubeconfig) as client:
        k8s.CoreV1Api(client).create_namespaced_config_map(
            "default", as_body(configmap("survives-restart", "default", a="b"))
        )
    added = "--oidc-required-claim=hd=acme.example"
    patch = {
        "spec": {
            "values": {
                "controlPlane": {
                    "distro": {"k8s": {"apiServer": {"extraArgs": [*OIDC_ARGS, added]}}}
                }
            }
        }
    }
    objects.custom.patch_namespaced_custom_object(
        HELM_RELEASE.group,
        HELM_RELEASE.version,
        WS_NAMESPACE,
        HELM_RELEASE.plural,
        "vcluster",
        as_body(patch),
    )

    def upgraded() -> dict[str, Any] | None:
        hr = objects.get(HELM_RELEASE, WS_NAMESPACE, "vcluster")
        status = hr.get("status") or {}
        done = (
            is_ready(hr)
            and status.get("observedGeneration") == hr["metadata"]["generation"]
            and status["history"][0]["version"] == 2
        )
        return hr if done else None

    wait_for(upgraded, timeout=120, what="helm-controller to upgrade the release (version 2)")
    after = standin.workspace(WS_NAMESPACE, "vcluster")
    assert after is not None and after is not before and after.running
    assert not before.running
    assert added in after.extra_args
    # A restarted vCluster keeps its certificates: the exported kubeconfig still works.
    secret = k8s.CoreV1Api(api).read_namespaced_secret("vc-vcluster", WS_NAMESPACE)
    assert secret.data is not None
    kubeconfig = base64.b64decode(secret.data["config"])
    for config in (workspace_release.kubeconfig, kubeconfig):
        with api_client_from_kubeconfig(config) as client:
            cm = k8s.CoreV1Api(client).read_namespaced_config_map("survives-restart", "default")
            assert cm.data == {"a": "b"}


def test_a_workspace_apiserver_that_cannot_start_fails_the_helmrelease(
    api: k8s.ApiClient,
    objects: Objects,
    standin: VClusterStandIn,
    workspace_release: WorkspaceRelease,
) -> None:
    """Like a crash-looping vCluster pod: the StatefulSet never gets ready, so helm-controller's
    wait times out and the HelmRelease reports the failure."""
    namespace = "acme--broken"
    k8s.CoreV1Api(api).create_namespace(as_body({"metadata": {"name": namespace}}))
    loft = objects.get(HELM_REPOSITORY, WS_NAMESPACE, "loft")
    objects.apply(
        HELM_REPOSITORY,
        namespace,
        {"metadata": {"name": "loft", "namespace": namespace}, "spec": loft["spec"]},
    )
    objects.apply(
        HELM_RELEASE,
        namespace,
        {
            "metadata": {"name": "vcluster", "namespace": namespace},
            "spec": {
                "interval": "30m",
                "chart": {
                    "spec": {
                        "chart": "vcluster",
                        "version": VCLUSTER_CHART_VERSION,
                        "sourceRef": {"kind": "HelmRepository", "name": "loft"},
                    }
                },
                "install": {"timeout": "15s"},
                "values": {
                    "controlPlane": {
                        "distro": {
                            "k8s": {"enabled": True, "apiServer": {"extraArgs": ["--no-such-flag"]}}
                        }
                    }
                },
            },
        },
    )

    def failed() -> Mapping[str, Any] | None:
        hr = objects.get_or_none(HELM_RELEASE, namespace, "vcluster")
        ready = condition(hr) if hr else None
        # SourceNotReady comes first while its new HelmRepository is fetched: not the verdict.
        if ready and ready["status"] == "False" and ready["reason"] != "SourceNotReady":
            return ready
        return None

    ready = wait_for(failed, timeout=90, what="HelmRelease acme--broken/vcluster Ready=False")
    note(f"failed vCluster: {ready['reason']}: {ready['message'][:160]}")
    assert ready["reason"] == "InstallFailed"
    assert standin.workspace(namespace, "vcluster") is None
    assert any("--no-such-flag" in e or "acme--broken" in e for e in standin.errors)
    objects.delete(HELM_RELEASE, namespace, "vcluster")


def test_flux_receiver_endpoint_listens(flux: FluxControllers) -> None:
    # No Receiver object exists: the webhook server answers, but with 404.
    assert httpx.post(f"{flux.receiver_url}/hook/unknown", timeout=5).status_code == 404


def test_deleting_the_helmrelease_stops_the_workspace_apiserver(
    api: k8s.ApiClient,
    objects: Objects,
    standin: VClusterStandIn,
    workspace_release: WorkspaceRelease,
) -> None:
    workspace = standin.workspace(WS_NAMESPACE, "vcluster")
    assert workspace is not None and workspace.running
    objects.delete(HELM_RELEASE, WS_NAMESPACE, "vcluster")
    wait_for(
        lambda: objects.get_or_none(HELM_RELEASE, WS_NAMESPACE, "vcluster") is None,
        timeout=90,
        what="helm-controller to uninstall and release the HelmRelease",
    )
    wait_for(lambda: not workspace.running, timeout=30, what="the workspace API server to stop")
    assert standin.workspace(WS_NAMESPACE, "vcluster") is None
    core = k8s.CoreV1Api(api)

    def secret_gone() -> bool:
        try:
            core.read_namespaced_secret("vc-vcluster", WS_NAMESPACE)
        except ApiException as error:
            return error.status == 404
        return False

    # The stand-in stops the server, then deletes the Secrets it wrote: wait for both.
    wait_for(secret_gone, timeout=30, what="the kubeconfig Secret to be deleted")
    note("figures: " + ", ".join(f"{k}={v:.1f}" for k, v in FIGURES.items()))
