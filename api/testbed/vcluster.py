"""The vCluster stand-in: no kubelet runs in the test bed, so the vCluster pod never starts.
This controller does, on the host, what that pod would do that Flux and Hexabase can see:

- for every HelmRelease (helm.toolkit.fluxcd.io/v2) of chart ``vcluster`` whose release
  StatefulSet exists (helm-controller really installed the chart), it starts a workspace
  kube-apiserver (HostCluster.start_workspace_apiserver) with the API-server arguments of
  the rendered vCluster config (Secret ``vc-config-<release>``, key ``config.yaml``:
  ``controlPlane.distro.k8s.apiServer.extraArgs``, OIDC flags included);
- writes its kubeconfig where ``exportKubeConfig`` says (Secret ``vc-<release>`` in the
  release namespace, key ``config``, plus ``exportKubeConfig.secret`` and
  ``additionalSecrets``), certificates embedded;
- reports the StatefulSet Ready (observedGeneration, replicas, readyReplicas, ...
  currentRevision == updateRevision) so helm-controller's kstatus wait passes;
- stops that API server when the HelmRelease is deleted (or its StatefulSet is gone).

The kubeconfig's server is the workspace API server's real 127.0.0.1 URL, not
``exportKubeConfig.server``: the in-cluster name it usually holds does not resolve here.
Level-triggered: watches on HelmReleases, StatefulSets and Secrets only wake the worker,
which then reconciles everything (and also every ``resync`` seconds).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from api.testbed.cluster import (
    HostCluster,
    WorkspaceApiServer,
    api_client_from_kubeconfig,
    as_body,
    install_crds,
    log,
)

HELM_GROUP, HELM_VERSION, HELM_PLURAL = "helm.toolkit.fluxcd.io", "v2", "helmreleases"
CHART_NAME = "vcluster"
KUBECONFIG_KEY = "config"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "hexabase-testbed-vcluster"


@dataclass(frozen=True)
class ReleaseRef:
    """A HelmRelease and the Helm release it installs."""

    namespace: str  # of the HelmRelease
    name: str  # of the HelmRelease
    release_namespace: str
    release_name: str

    @property
    def server_name(self) -> str:
        # Namespaces hold no dots, so "<namespace>.<release>" is unique per release.
        return f"{self.release_namespace}.{self.release_name}"


def release_ref(helmrelease: Mapping[str, Any]) -> ReleaseRef:
    """The Helm release name and namespace, as helm-controller derives them."""
    meta, spec = helmrelease["metadata"], helmrelease.get("spec") or {}
    namespace, name = str(meta["namespace"]), str(meta["name"])
    target = str(spec.get("targetNamespace") or "")
    release = str(spec.get("releaseName") or (f"{target}-{name}" if target else name))
    if len(release) > 53:  # helm-controller's release.ShortenName
        digest = hashlib.sha256(release.encode()).hexdigest()
        release = f"{release[:40]}-{digest[:12]}"
    return ReleaseRef(namespace, name, target or namespace, release)


def is_vcluster_release(helmrelease: Mapping[str, Any]) -> bool:
    chart = ((helmrelease.get("spec") or {}).get("chart") or {}).get("spec") or {}
    return chart.get("chart") == CHART_NAME


def apiserver_extra_args(config: Mapping[str, Any]) -> tuple[str, ...]:
    """``controlPlane.distro.k8s.apiServer.extraArgs`` of a vCluster config (or values)."""
    node: Any = config
    for key in ("controlPlane", "distro", "k8s", "apiServer", "extraArgs"):
        node = node.get(key) if isinstance(node, Mapping) else None
    return tuple(str(a) for a in node or ())


def kubeconfig_secrets(config: Mapping[str, Any], ref: ReleaseRef) -> list[tuple[str, str]]:
    """(namespace, name) of every Secret the kubeconfig goes into: ``vc-<release>`` in the
    release namespace, plus ``exportKubeConfig.secret`` and ``additionalSecrets``."""
    default = (ref.release_namespace, f"vc-{ref.release_name}")
    export = config.get("exportKubeConfig") or {}
    wanted = [default]
    for entry in [export.get("secret") or {}, *(export.get("additionalSecrets") or [])]:
        name, namespace = entry.get("name") or "", entry.get("namespace") or ""
        if name or namespace:
            wanted.append((namespace or default[0], name or default[1]))
    return list(dict.fromkeys(wanted))


def ready_statefulset_status(statefulset: Mapping[str, Any]) -> dict[str, Any]:
    """The status a healthy, fully rolled-out StatefulSet reports (kstatus: Current)."""
    meta, spec = statefulset["metadata"], statefulset.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    generation = int(meta.get("generation") or 1)
    revision = f"{meta['name']}-standin-{generation}"
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": replicas,
        "currentReplicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    }


@dataclass
class VClusterStandIn:
    """Runs the stand-in controller in background threads; ``stop()`` ends it and every
    workspace API server it started."""

    host: HostCluster
    resync: float = 5.0
    # CRDs of the platform add-ons that run inside every vCluster (Knative Serving, Kyverno),
    # installed into each workspace API server when it starts.
    addon_crds: tuple[str, ...] = ()
    workspaces: dict[ReleaseRef, WorkspaceApiServer] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list, repr=False)
    _wake: threading.Event = field(default_factory=threading.Event, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _watches: list[k8s_watch.Watch] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Per release: (failures so far, monotonic time before which not to retry).
    _backoff: dict[ReleaseRef, tuple[int, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def start(
        cls, host: HostCluster, *, resync: float = 5.0, addon_crds: Iterable[str] = ()
    ) -> VClusterStandIn:
        standin = cls(host=host, resync=resync, addon_crds=tuple(addon_crds))
        standin._spawn("vcluster-standin", standin._run)
        standin._spawn("watch-helmreleases", standin._watch_helmreleases)
        standin._spawn("watch-statefulsets", standin._watch_statefulsets)
        standin._spawn("watch-secrets", standin._watch_config_secrets)
        log("vCluster stand-in controller started")
        return standin

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ---- public -----------------------------------------------------------------------

    def workspace(self, namespace: str, helmrelease: str) -> WorkspaceApiServer | None:
        """The running workspace API server of a HelmRelease, if any."""
        with self._lock:
            for ref, ws in self.workspaces.items():
                if (ref.namespace, ref.name) == (namespace, helmrelease):
                    return ws
        return None

    def wait_for_workspace(
        self, namespace: str, helmrelease: str, *, timeout: float = 120.0
    ) -> WorkspaceApiServer:
        deadline = time.monotonic() + timeout
        while (ws := self.workspace(namespace, helmrelease)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no workspace API server for HelmRelease {namespace}/{helmrelease} "
                    f"within {timeout:.0f}s; errors: {self.errors[-3:]}"
                )
            time.sleep(0.2)
        return ws

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for w in list(self._watches):
            w.stop()  # type: ignore[no-untyped-call]
        # The worker may be starting an API server: wait for it. A watch thread blocks in
        # its read until the server ends the watch (<= 10 s); it is a daemon and only ever
        # wakes the worker, so it is not waited for.
        self._threads[0].join(120)
        with self._lock:
            refs = list(self.workspaces)
            self.workspaces.clear()
        for ref in refs:
            self.host.stop_workspace_apiserver(ref.server_name)
        log("vCluster stand-in controller stopped")

    # ---- watches: they only wake the worker ---------------------------------------------

    def _watch_loop(self, what: str, list_fn: Callable[[k8s.ApiClient], Any], **kw: Any) -> None:
        while not self._stopping.is_set():
            try:
                with self.host.api_client() as api:
                    w = k8s_watch.Watch()  # type: ignore[no-untyped-call]
                    self._watches.append(w)
                    try:
                        for _event in w.stream(  # type: ignore[no-untyped-call]
                            list_fn(api), timeout_seconds=10, **kw
                        ):
                            self._wake.set()
                            if self._stopping.is_set():
                                break
                    finally:
                        self._watches.remove(w)
            except Exception as exc:  # the CRDs may not exist yet; the server may restart
                if not self._stopping.is_set():
                    self._note(f"watch {what}: {exc!r}")
                    self._stopping.wait(1.0)

    def _watch_helmreleases(self) -> None:
        self._watch_loop(
            "helmreleases",
            lambda api: k8s.CustomObjectsApi(api).list_cluster_custom_object,
            group=HELM_GROUP,
            version=HELM_VERSION,
            plural=HELM_PLURAL,
        )

    def _watch_statefulsets(self) -> None:
        self._watch_loop(
            "statefulsets",
            lambda api: k8s.AppsV1Api(api).list_stateful_set_for_all_namespaces,
            label_selector="app=vcluster",
        )

    def _watch_config_secrets(self) -> None:
        self._watch_loop(
            "secrets",
            lambda api: k8s.CoreV1Api(api).list_secret_for_all_namespaces,
            label_selector="app=vcluster",
        )

    # ---- the worker -----------------------------------------------------------------------

    def _note(self, message: str) -> None:
        self.errors.append(message)
        del self.errors[:-50]
        log(f"vcluster stand-in: {message}")

    def _run(self) -> None:
        with self.host.api_client() as api:
            while not self._stopping.is_set():
                self._wake.wait(self.resync)
                self._wake.clear()
                if self._stopping.is_set():
                    return
                try:
                    self.reconcile(api)
                except Exception as exc:
                    self._note(f"reconcile: {exc!r}")
                    self._stopping.wait(1.0)
                    self._wake.set()

    def reconcile(self, api: k8s.ApiClient) -> None:
        """One level-triggered pass over every vCluster HelmRelease."""
        custom, apps = k8s.CustomObjectsApi(api), k8s.AppsV1Api(api)
        listed: Any = custom.list_cluster_custom_object(HELM_GROUP, HELM_VERSION, HELM_PLURAL)
        items: list[dict[str, Any]] = listed["items"]
        live: set[ReleaseRef] = set()
        for hr in items:
            if not is_vcluster_release(hr) or hr["metadata"].get("deletionTimestamp"):
                continue
            ref = release_ref(hr)
            statefulset = _read_or_none(
                functools.partial(
                    apps.read_namespaced_stateful_set, ref.release_name, ref.release_namespace
                )
            )
            if statefulset is None:
                continue  # not installed (yet), or uninstalled
            live.add(ref)
            failures, not_before = self._backoff.get(ref, (0, 0.0))
            if time.monotonic() < not_before:
                continue
            try:
                self._reconcile_release(
                    api,
                    hr,
                    ref,
                    api.sanitize_for_serialization(statefulset),  # type: ignore[no-untyped-call]
                )
            except Exception as exc:
                # Like a crash-looping vCluster pod: the StatefulSet stays unready (so the
                # HelmRelease's wait fails) and the start is retried with a growing delay.
                delay = min(2.0**failures, 30.0)
                self._backoff[ref] = (failures + 1, time.monotonic() + delay)
                self._note(f"{ref.server_name}: {exc!r} (retry in {delay:.0f}s)")
            else:
                self._backoff.pop(ref, None)
        with self._lock:
            gone = [ref for ref in self.workspaces if ref not in live]
        for ref in gone:
            self._remove(api, ref)

    def _reconcile_release(
        self,
        api: k8s.ApiClient,
        helmrelease: Mapping[str, Any],
        ref: ReleaseRef,
        statefulset: Mapping[str, Any],
    ) -> None:
        core = k8s.CoreV1Api(api)
        config = self._vcluster_config(core, helmrelease, ref)
        args = apiserver_extra_args(config)
        with self._lock:
            current = self.workspaces.get(ref)
        if current is not None and (current.extra_args != args or not current.running):
            log(f"restarting workspace API server {ref.server_name}: arguments or process changed")
            with self._lock:
                self.workspaces.pop(ref, None)
            self.host.stop_workspace_apiserver(ref.server_name)
            current = None
        if current is None:
            current = self.host.start_workspace_apiserver(ref.server_name, args)
            if self.addon_crds:
                server = current
                install_crds(
                    lambda: api_client_from_kubeconfig(server.kubeconfig_bytes()), self.addon_crds
                )
            with self._lock:
                self.workspaces[ref] = current
        context = str((config.get("exportKubeConfig") or {}).get("context") or "vcluster")
        kubeconfig = current.kubeconfig_bytes(context=context)
        for namespace, name in kubeconfig_secrets(config, ref):
            self._write_secret(core, namespace, name, ref, current, kubeconfig)
        wanted = ready_statefulset_status(statefulset)
        status = statefulset.get("status") or {}
        if any(status.get(k) != v for k, v in wanted.items()):
            k8s.AppsV1Api(api).patch_namespaced_stateful_set_status(
                ref.release_name, ref.release_namespace, {"status": wanted}
            )

    @staticmethod
    def _vcluster_config(
        core: k8s.CoreV1Api, helmrelease: Mapping[str, Any], ref: ReleaseRef
    ) -> Mapping[str, Any]:
        """The rendered config the vCluster pod would read; the HelmRelease's values if the
        chart's config Secret is missing."""
        secret = _read_or_none(
            lambda: core.read_namespaced_secret(
                f"vc-config-{ref.release_name}", ref.release_namespace
            )
        )
        data = (secret.data or {}) if secret is not None else {}
        if "config.yaml" in data:
            loaded = yaml.safe_load(base64.b64decode(data["config.yaml"]))
            if isinstance(loaded, Mapping):
                return loaded
        values = (helmrelease.get("spec") or {}).get("values") or {}
        return values if isinstance(values, Mapping) else {}

    @staticmethod
    def _write_secret(
        core: k8s.CoreV1Api,
        namespace: str,
        name: str,
        ref: ReleaseRef,
        workspace: WorkspaceApiServer,
        kubeconfig: bytes,
    ) -> None:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        data = {
            KUBECONFIG_KEY: b64(kubeconfig),
            "certificate-authority": b64(workspace.ca_pem),
            "client-certificate": b64(workspace.admin.cert_pem),
            "client-key": b64(workspace.admin.key_pem),
        }
        body = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    MANAGED_BY_LABEL: MANAGED_BY,
                    "vcluster.loft.sh/release": ref.release_name,
                },
                "annotations": {"hexabase.io/helmrelease": f"{ref.namespace}/{ref.name}"},
            },
            "type": "Opaque",
            "data": data,
        }
        existing = _read_or_none(lambda: core.read_namespaced_secret(name, namespace))
        if existing is None:
            core.create_namespaced_secret(namespace, as_body(body))
        elif (existing.data or {}) != data:
            core.patch_namespaced_secret(name, namespace, as_body(body))

    def _remove(self, api: k8s.ApiClient, ref: ReleaseRef) -> None:
        with self._lock:
            self.workspaces.pop(ref, None)
        self.host.stop_workspace_apiserver(ref.server_name)
        core = k8s.CoreV1Api(api)
        secrets = core.list_secret_for_all_namespaces(
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY},vcluster.loft.sh/release={ref.release_name}"
        )
        for secret in secrets.items:
            meta = secret.metadata
            if meta is None or not meta.name or not meta.namespace:
                continue
            if (meta.annotations or {}).get(
                "hexabase.io/helmrelease"
            ) == f"{ref.namespace}/{ref.name}":
                with contextlib.suppress(ApiException):
                    core.delete_namespaced_secret(meta.name, meta.namespace)


def _read_or_none(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
