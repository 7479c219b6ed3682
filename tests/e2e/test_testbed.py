"""End to end on the testbed: real kube-apiservers, the real Flux controllers, Hexabase's API,
worker and status watcher. Everything goes through the public API, except where an engineer
would push to the tenant repository by hand.

Covers: an organization, a `standard` workspace and a project with a quota, a custom role and
binding, a CronJob and a Function end as objects in the host and in the workspace's API
server exactly as rendered (Kyverno policies and the Knative Service validated by the real API
server); deleting the project prunes it; an engineer's manifest under the project's apps/ is
applied; a manifest in one organization's repository aimed at another organization's host
namespace is refused and the other is untouched; a manifest the API server rejects shows as a
failed Kustomization; a change the cluster refuses is `failed` with a readable reason, and the
fix makes it `applied`, with the lifecycle and server-sent events in order.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from api.testbed.cluster import api_client_from_kubeconfig
from api.testbed.testbed import Testbed as Bed
from reconciler.gitstore import GitStore, Person

T = TypeVar("T")
# Each test waits on real controllers (a vCluster install, Flux retries): minutes, not seconds.
pytestmark = pytest.mark.timeout(900)
ENGINEER = Person("Eve Engineer", "eve@example.com")
KUSTOMIZE = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    bed = Bed.start(tmp_path_factory.mktemp("testbed"))
    try:
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope="module")
def api(testbed: Bed) -> Iterator[httpx.Client]:
    from api.db.session import make_engine, make_sessionmaker
    from api.db.users import create_token

    engine = make_engine(testbed.env["HEXABASE_DATABASE_URL"], pool_size=1)
    token = create_token(make_sessionmaker(engine), email="ada@example.com", name="Ada")
    engine.dispose()
    with httpx.Client(
        base_url=testbed.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def as_yaml(**document: Any) -> bytes:
    return yaml.safe_dump(document, sort_keys=False).encode()


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 180) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except k8s.ApiException as error:
            last = error
        time.sleep(1)
    raise AssertionError(f"not within {timeout:.0f} s: {what} (last error: {last})")


def committed(api: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    change: dict[str, Any] = api.get(response.json()["change"]["link"], params={"wait": 30}).json()
    assert change["state"] == "committed", change
    return change


def settled(api: httpx.Client, change: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        now: dict[str, Any] = api.get(change["link"]).json()
        return now if now["state"] in ("applied", "failed") else None

    return eventually(probe, f"change {change['id']} applied or failed", timeout)


def workspace_api(testbed: Bed, namespace: str) -> k8s.ApiClient:
    """The workspace's API server, through the kubeconfig its vCluster exports."""
    with testbed.host.api_client() as host:
        secret = eventually(
            lambda: k8s.CoreV1Api(host).read_namespaced_secret("vc-vcluster", namespace),
            f"Secret vc-vcluster in {namespace}",
        )
    return api_client_from_kubeconfig(base64.b64decode(secret.data["config"]))


def contains_all(live: Any, wanted: Any, path: str = "") -> list[str]:
    """Differences where `live` lacks or changes something `wanted` (rendered) says; defaults
    the API server adds are fine."""
    if isinstance(wanted, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not a mapping"]
        return [d for k, v in wanted.items() for d in contains_all(live.get(k), v, f"{path}.{k}")]
    if isinstance(wanted, list):
        if not isinstance(live, list) or len(live) != len(wanted):
            return [f"{path}: {live!r} != {wanted!r}"]
        return [
            d
            for i, (a, b) in enumerate(zip(live, wanted, strict=True))
            for d in contains_all(a, b, f"{path}[{i}]")
        ]
    return [] if live == wanted or str(live) == str(wanted) else [f"{path}: {live!r} != {wanted!r}"]


def live_object(api: k8s.ApiClient, doc: dict[str, Any]) -> dict[str, Any]:
    """GET the object a rendered document describes (kinds found through discovery)."""
    from kubernetes.dynamic import DynamicClient

    resource = DynamicClient(api).resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    meta = doc["metadata"]
    live = resource.get(name=meta["name"], namespace=meta.get("namespace"))
    return dict(live.to_dict())


def rendered_docs(store: GitStore, org_id: str, directory: str) -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in store_paths(store, org_id, directory):
        if path.name == "kustomization.yaml":
            continue
        data = store.read_file(org_id, path)
        assert data is not None
        docs.extend((str(path), d) for d in yaml.safe_load_all(data) if d)
    return docs


def store_paths(store: GitStore, org_id: str, directory: str) -> list[PurePosixPath]:
    out = subprocess.run(
        [
            "git",
            "--git-dir",
            str(store.path(org_id)),
            "ls-tree",
            "-r",
            "--name-only",
            "main",
            directory,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [PurePosixPath(p) for p in out.split()]


def kustomization(testbed: Bed, namespace: str, name: str) -> dict[str, Any]:
    with testbed.host.api_client() as host:
        obj: dict[str, Any] = k8s.CustomObjectsApi(host).get_namespaced_custom_object(
            *KUSTOMIZE[:2], namespace, KUSTOMIZE[2], name
        )
        return obj


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return dict(condition)
    return {}


def reconcile_now(testbed: Bed, namespace: str, name: str) -> None:
    """What `flux reconcile source git` does: ask for a fetch now instead of at the interval
    (an engineer's push reaches Flux through the Git host's webhook or this)."""
    with testbed.host.api_client() as host:
        k8s.CustomObjectsApi(host).patch_namespaced_custom_object(
            "source.toolkit.fluxcd.io",
            "v1",
            namespace,
            "gitrepositories",
            name,
            {
                "metadata": {
                    "annotations": {
                        "reconcile.fluxcd.io/requestedAt": datetime.now(UTC).isoformat()
                    }
                }
            },
        )


def test_api_actions_become_objects_in_the_host_and_the_workspace(
    testbed: Bed, api: httpx.Client
) -> None:
    org = api.post("/api/v1/organizations", json={"name": "acme"}).json()["resource"]
    base = "/api/v1/organizations/acme/workspaces/dev"
    committed(
        api,
        api.post("/api/v1/organizations/acme/workspaces", json={"name": "dev", "plan": "standard"}),
    )
    committed(
        api,
        api.post(
            f"{base}/projects", json={"name": "web", "quota": {"requests.cpu": "2", "pods": "10"}}
        ),
    )
    committed(api, api.post(f"{base}/groups", json={"name": "Deployers", "parent": "WSUsers"}))
    committed(
        api,
        api.post(
            f"{base}/projects/web/roles",
            json={
                "name": "deployer",
                "rules": [
                    {
                        "api_groups": ["apps"],
                        "resources": ["deployments"],
                        "verbs": ["get", "list", "update"],
                    }
                ],
            },
        ),
    )
    committed(
        api,
        api.post(
            f"{base}/rolebindings",
            json={
                "name": "deployers",
                "group": "Deployers",
                "project": "web",
                "project_role": "deployer",
            },
        ),
    )
    committed(
        api,
        api.post(
            f"{base}/projects/web/cronjobs",
            json={
                "name": "nightly",
                "schedule": "0 3 * * *",
                "image": "docker.io/library/busybox:1.36",
                "command": ["sh", "-c", "date"],
            },
        ),
    )
    last = committed(
        api,
        api.post(
            f"{base}/projects/web/functions",
            json={"name": "hello", "image": "ghcr.io/acme/hello:1"},
        ),
    )

    # The host: the workspace namespace and its vCluster, installed by helm-controller.
    with testbed.host.api_client() as host:
        eventually(
            lambda: k8s.CoreV1Api(host).read_namespace("acme--dev"), "host namespace acme--dev"
        )
        release = eventually(
            lambda: (lambda hr: hr if ready_condition(hr).get("status") == "True" else None)(
                k8s.CustomObjectsApi(host).get_namespaced_custom_object(
                    "helm.toolkit.fluxcd.io", "v2", "acme--dev", "helmreleases", "vcluster"
                )
            ),
            "HelmRelease acme--dev/vcluster Ready",
        )
        assert "Helm install succeeded" in ready_condition(release)["message"]
    assert settled(api, last)["state"] == "applied"
    assert api.get(base).json()["state"] == "ready"

    # The workspace: every rendered object, as rendered.
    store = GitStore(testbed.env["HEXABASE_REPOS_DIR"], durability="none")
    workspace = workspace_api(testbed, "acme--dev")
    docs = rendered_docs(store, org["id"], "workspaces/dev")
    kinds = {d["kind"] for _, d in docs}
    assert {
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "CronJob",
        "Service",
        "ValidatingPolicy",
    } <= kinds, kinds
    for path, doc in docs:
        live = live_object(workspace, doc)
        for section in ("spec", "rules", "roleRef", "subjects", "metadata"):
            if section in doc:
                wanted = (
                    doc[section]
                    if section != "metadata"
                    else {"labels": doc["metadata"].get("labels", {})}
                )
                assert not contains_all(live.get(section), wanted), (
                    path,
                    contains_all(live.get(section), wanted),
                )

    # Delete the project: Flux prunes its namespace inside the workspace.
    delete = committed(api, api.delete(f"{base}/projects/web"))
    assert settled(api, delete)["state"] == "applied"
    core = k8s.CoreV1Api(workspace)
    eventually(
        lambda: "web" not in [n.metadata.name for n in core.list_namespace().items],
        "namespace web pruned",
    )


def test_engineers_apps_are_applied(testbed: Bed, api: httpx.Client) -> None:
    org = api.post("/api/v1/organizations", json={"name": "initech"}).json()["resource"]
    committed(
        api,
        api.post(
            "/api/v1/organizations/initech/workspaces", json={"name": "prod", "plan": "starter"}
        ),
    )
    change = committed(
        api,
        api.post(
            "/api/v1/organizations/initech/workspaces/prod/projects", json={"name": "billing"}
        ),
    )
    assert settled(api, change)["state"] == "applied"
    store = GitStore(testbed.env["HEXABASE_REPOS_DIR"], durability="none")
    apps = "workspaces/prod/projects/billing/apps"
    store.commit(
        org["id"],
        writes={
            f"{apps}/kustomization.yaml": as_yaml(
                apiVersion="kustomize.config.k8s.io/v1alpha1",
                kind="Component",
                resources=["settings.yaml"],
            ),
            f"{apps}/settings.yaml": as_yaml(
                apiVersion="v1",
                kind="ConfigMap",
                metadata={"name": "settings"},
                data={"mode": "fast"},
            ),
        },
        author=ENGINEER,
        subject="billing: settings",
    )
    reconcile_now(testbed, "initech--system", "initech")
    core = k8s.CoreV1Api(workspace_api(testbed, "initech--prod"))
    config = eventually(
        lambda: core.read_namespaced_config_map("settings", "billing"), "the engineer's ConfigMap"
    )
    assert config.data == {"mode": "fast"}
    # Hexabase's next commit keeps the engineer's files.
    committed(
        api,
        api.patch(
            "/api/v1/organizations/initech/workspaces/prod/projects/billing",
            json={"quota": {"pods": "3"}},
        ),
    )
    assert store.read_file(org["id"], f"{apps}/settings.yaml") is not None


def test_one_organization_cannot_touch_anothers_host_namespace(
    testbed: Bed, api: httpx.Client
) -> None:
    attacker = api.post("/api/v1/organizations", json={"name": "evilcorp"}).json()["resource"]
    committed(
        api,
        api.post(
            "/api/v1/organizations/evilcorp/workspaces", json={"name": "dev", "plan": "starter"}
        ),
    )
    victim_change = committed(api, api.post("/api/v1/organizations", json={"name": "goodcorp"}))
    committed(
        api,
        api.post(
            "/api/v1/organizations/goodcorp/workspaces", json={"name": "dev", "plan": "starter"}
        ),
    )
    assert settled(api, victim_change)["state"] == "applied"
    with testbed.host.api_client() as host:
        eventually(lambda: k8s.CoreV1Api(host).read_namespace("goodcorp--dev"), "goodcorp--dev")
    store = GitStore(testbed.env["HEXABASE_REPOS_DIR"], durability="none")
    host_kustomization = store.read_file(attacker["id"], "host/kustomization.yaml")
    assert host_kustomization is not None
    resources = yaml.safe_load(host_kustomization)
    resources["resources"].append("evil.yaml")
    store.commit(
        attacker["id"],
        writes={
            "host/evil.yaml": as_yaml(
                apiVersion="v1",
                kind="ConfigMap",
                metadata={"name": "evil", "namespace": "goodcorp--dev"},
                data={"x": "y"},
            ),
            "host/kustomization.yaml": yaml.safe_dump(resources).encode(),
        },
        author=ENGINEER,
        subject="reach into another tenant",
    )
    reconcile_now(testbed, "evilcorp--system", "evilcorp")

    def refused() -> dict[str, Any] | None:
        ready = ready_condition(kustomization(testbed, "evilcorp--system", "host"))
        return ready if ready.get("status") == "False" else None

    condition = refused_condition = eventually(refused, "evilcorp's host Kustomization refused")
    assert (
        "forbidden" in condition["message"].lower() or "cannot" in condition["message"].lower()
    ), refused_condition
    with testbed.host.api_client() as host:
        with pytest.raises(k8s.ApiException) as missing:
            k8s.CoreV1Api(host).read_namespaced_config_map("evil", "goodcorp--dev")
        assert missing.value.status == 404


def test_rejected_manifest_is_a_failed_kustomization_and_a_refused_change_fails_then_is_fixed(
    testbed: Bed, api: httpx.Client
) -> None:
    org = api.post("/api/v1/organizations", json={"name": "umbrella"}).json()["resource"]
    base = "/api/v1/organizations/umbrella/workspaces/lab"
    committed(
        api,
        api.post(
            "/api/v1/organizations/umbrella/workspaces", json={"name": "lab", "plan": "starter"}
        ),
    )
    first = committed(api, api.post(f"{base}/projects", json={"name": "cells"}))
    assert settled(api, first)["state"] == "applied"

    # An engineer commits a quota the API server refuses: a failed Kustomization, not silence.
    store = GitStore(testbed.env["HEXABASE_REPOS_DIR"], durability="none")
    quota = "workspaces/lab/projects/cells/resourcequota.yaml"
    store.commit(
        org["id"],
        writes={
            quota: as_yaml(
                apiVersion="v1",
                kind="ResourceQuota",
                metadata={"name": "hexabase", "namespace": "cells"},
                spec={"hard": {"pods": "-1"}},
            ),
            "workspaces/lab/projects/cells/kustomization.yaml": as_yaml(
                apiVersion="kustomize.config.k8s.io/v1beta1",
                kind="Kustomization",
                resources=["limitrange.yaml", "namespace.yaml", "resourcequota.yaml"],
            ),
        },
        author=ENGINEER,
        subject="tighten the quota by hand",
    )
    reconcile_now(testbed, "umbrella--system", "umbrella")

    def failing() -> dict[str, Any] | None:
        ready = ready_condition(kustomization(testbed, "umbrella--lab", "hexabase.workspace"))
        return ready if ready.get("status") == "False" else None

    condition = eventually(failing, "the workspace Kustomization failed")
    assert "ResourceQuota" in condition["message"] and "invalid" in condition["message"].lower(), (
        condition
    )

    # A change the cluster refuses (a LimitRange whose default exceeds its max): failed, with a
    # sentence a person can act on; the next change re-renders the quota file too.
    events: list[dict[str, Any]] = []
    stop, subscribed = threading.Event(), threading.Event()
    reader = threading.Thread(
        target=follow, args=(testbed, api, "umbrella", events, stop, subscribed), daemon=True
    )
    reader.start()
    assert subscribed.wait(10)  # no transition may fall before the stream is open
    bad = committed(
        api,
        api.patch(
            f"{base}/projects/cells",
            json={
                "limit_range": {
                    "default": {"cpu": "4"},
                    "default_request": {"cpu": "1"},
                    "max": {"cpu": "1"},
                }
            },
        ),
    )
    outcome = settled(api, bad)
    assert outcome["state"] == "failed", outcome
    assert outcome["reason"] and "LimitRange" in outcome["reason"], outcome
    assert outcome["raw_status"]
    fix = committed(
        api,
        api.patch(
            f"{base}/projects/cells",
            json={
                "limit_range": {
                    "default": {"cpu": "500m"},
                    "default_request": {"cpu": "100m"},
                    "max": {"cpu": "1"},
                }
            },
        ),
    )
    assert settled(api, fix)["state"] == "applied"
    eventually(
        lambda: api.get(bad["link"]).json()["state"] == "applied",
        "the failed change applied by the fix",
    )
    steps = [s["state"] for s in api.get(bad["link"]).json()["history"]]
    assert steps == ["pending", "committed", "failed", "applied"], steps
    stop.set()
    mine = [
        e["state"] for e in events if e.get("entity") == "change" and e.get("id") == str(bad["id"])
    ]
    assert mine[:3] == ["committed", "failed", "applied"], mine


def follow(
    testbed: Bed,
    api: httpx.Client,
    org: str,
    out: list[dict[str, Any]],
    stop: threading.Event,
    subscribed: threading.Event,
) -> None:
    """Collect an organization's server-sent events until `stop`."""
    headers = {"Authorization": api.headers["Authorization"]}
    path = f"/api/v1/organizations/{org}/events"
    try:
        with (
            httpx.Client(base_url=testbed.api_url, headers=headers) as client,
            client.stream("GET", path, timeout=None) as response,
        ):
            event = ""
            for line in response.iter_lines():
                subscribed.set()  # the server's first line comes once it has subscribed
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "state":
                    out.append(json.loads(line[6:]))
    except httpx.TransportError:
        if not stop.is_set():
            raise


def test_testbed_memory_and_processes(testbed: Bed) -> None:
    rss = testbed.rss_bytes()
    assert 200 * 2**20 < rss < 12 * 2**30, rss
    assert all(p.running for p in testbed.hexabase)
    assert Path(testbed.host.kubeconfig).exists()


def test_a_deleted_workspace_is_deleting_until_flux_removed_it_then_gone(
    testbed: Bed, api: httpx.Client
) -> None:
    base = "/api/v1/organizations/wonka/workspaces"
    committed(api, api.post("/api/v1/organizations", json={"name": "wonka"}))
    created = committed(api, api.post(base, json={"name": "factory", "plan": "starter"}))
    assert settled(api, created)["state"] == "applied"
    eventually(lambda: api.get(f"{base}/factory").json()["state"] == "ready", "workspace ready")
    deletion = api.delete(f"{base}/factory")
    assert deletion.status_code == 200 and deletion.json()["resource"]["state"] == "deleting"
    refused = api.post(f"{base}/factory/projects", json={"name": "late"})
    assert refused.status_code == 409 and "being deleted" in refused.text
    eventually(lambda: api.get(f"{base}/factory").status_code == 404, "workspace gone", timeout=240)
    assert testbed.standin.workspace("wonka--factory", "vcluster") is None

    def namespace_gone() -> bool:
        with testbed.host.api_client() as host:
            try:
                k8s.CoreV1Api(host).read_namespace("wonka--factory")
            except k8s.ApiException as error:
                return error.status == 404
        return False

    eventually(namespace_gone, "host namespace wonka--factory removed by the platform repository")
    history = api.get("/api/v1/organizations/wonka/changes").json()
    assert "workspace.purge" in [c["action"] for c in history]


def test_platform_commits_notify_the_platform_receiver(testbed: Bed, api: httpx.Client) -> None:
    """A new organization's namespaces should not wait for the platform repository's polling:
    after a platform commit the worker notifies its Receiver, which asks Flux to fetch."""

    def requested_at() -> str | None:
        with testbed.host.api_client() as host:
            source = k8s.CustomObjectsApi(host).get_namespaced_custom_object(
                "source.toolkit.fluxcd.io", "v1", "flux-system", "gitrepositories", "platform"
            )
        annotations = source["metadata"].get("annotations") or {}
        value = annotations.get("reconcile.fluxcd.io/requestedAt")
        return str(value) if value else None

    before = requested_at()
    committed(api, api.post("/api/v1/organizations", json={"name": "soylent"}))
    eventually(lambda: requested_at() not in (None, before), "the platform Receiver triggered")
