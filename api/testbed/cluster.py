"""The test bed's host cluster: etcd, kube-apiserver and kube-controller-manager as local
processes on 127.0.0.1, plus one more kube-apiserver per Workspace (the vCluster stand-in)
sharing the same etcd under its own prefix.

No kubelet and no scheduler run: objects are real and validated by the real API server, but
no pod ever starts. The host's kube-controller-manager runs every default controller except
the StatefulSet controller, so that the vCluster stand-in owns StatefulSet status.

Each workspace API server gets a small kube-controller-manager of its own (namespace,
garbage-collector, service-account and ClusterRole-aggregation controllers): without it a
Namespace that Flux prunes inside a workspace would stay Terminating forever.

Together with the other test bed modules::

    host = HostCluster.start(workdir / "cluster")
    host.install_crds()                                   # Flux, Knative Serving, Kyverno
    flux = FluxControllers.start(workdir / "flux", host.kubeconfig)
    git = GitHttpServer.start(repos_dir)                  # <git.url>/<org>.git
    charts = ChartRepository.start(workdir / "charts")    # HelmRepository url: charts.url
    standin = VClusterStandIn.start(host)                 # vCluster HelmRelease -> API server
    ...
    for part in (standin, charts, git, flux, host):
        part.stop()
"""

from __future__ import annotations

import base64
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from api.testbed import tools
from api.testbed.pki import CertificateAuthority, CertKey, ServiceAccountKeys
from api.testbed.processes import ManagedProcess, free_ports

#: CRD sources installed by HostCluster.install_crds() (keys of tools.CRD_SOURCES).
DEFAULT_CRD_SOURCES: tuple[str, ...] = (*tools.FLUX_CONTROLLERS, "knative-serving", "kyverno")
#: Controllers of a workspace API server's kube-controller-manager.
WORKSPACE_CONTROLLERS: tuple[str, ...] = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
)
#: Host controllers: all on-by-default ones but the StatefulSet controller (the vCluster
#: stand-in writes StatefulSet status), and the ones that need nodes or a cloud.
HOST_CONTROLLERS: tuple[str, ...] = (
    "*",
    "-statefulset-controller",
    "-node-ipam-controller",
    "-node-lifecycle-controller",
    "-cloud-node-lifecycle-controller",
    "-node-route-controller",
    "-service-lb-controller",
)
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_CLUSTER_IP = "10.0.0.1"

_T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress on stderr: the test bed takes seconds to minutes to come up."""
    print(f"[testbed {time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def render_kubeconfig(
    *, server: str, ca_pem: bytes, client: CertKey, name: str, namespace: str = "default"
) -> bytes:
    """A kubeconfig with every certificate embedded (no file paths): usable anywhere."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate-data": b64(client.cert_pem),
                    "client-key-data": b64(client.key_pem),
                },
            }
        ],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": name, "user": name, "namespace": namespace},
            }
        ],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


def api_client_from_kubeconfig(kubeconfig: bytes | Path) -> k8s.ApiClient:
    """A kubernetes client for a kubeconfig (bytes or file). One per thread."""
    data = kubeconfig.read_bytes() if isinstance(kubeconfig, Path) else kubeconfig
    client: k8s.ApiClient = k8s_config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
        config_dict=yaml.safe_load(data)
    )
    return client


def _ssl_context(ca_pem: bytes, client: CertKey, directory: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    cert, key = client.write(directory, "readiness-client")
    ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class WorkspaceApiServer:
    """One Workspace's kube-apiserver (vCluster stand-in), on the host's etcd."""

    name: str
    url: str
    etcd_prefix: str
    extra_args: tuple[str, ...]
    ca_pem: bytes
    admin: CertKey = field(repr=False)
    apiserver: ManagedProcess = field(repr=False)
    controller_manager: ManagedProcess | None = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.apiserver.pid

    @property
    def running(self) -> bool:
        return self.apiserver.running

    def kubeconfig_bytes(self, *, context: str | None = None) -> bytes:
        """Admin kubeconfig, certificates embedded."""
        return render_kubeconfig(
            server=self.url,
            ca_pem=self.ca_pem,
            client=self.admin,
            name=context or f"workspace-{self.name}",
        )

    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.apiserver, self.controller_manager) if p is not None]

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.stop()


@dataclass
class HostCluster:
    """etcd + host kube-apiserver + kube-controller-manager, and the workspace API servers."""

    workdir: Path
    url: str
    kubeconfig: Path
    ca: CertificateAuthority = field(repr=False)
    sa_keys: ServiceAccountKeys = field(repr=False)
    admin: CertKey = field(repr=False)
    etcd_url: str
    binaries: Mapping[str, Path] = field(repr=False)
    etcd: ManagedProcess = field(repr=False)
    apiserver: ManagedProcess = field(repr=False)
    controller_manager: ManagedProcess = field(repr=False)
    workspaces: dict[str, WorkspaceApiServer] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(cls, workdir: Path) -> HostCluster:
        """Start etcd, the host kube-apiserver and kube-controller-manager under ``workdir``.

        Builds the binaries first if they are not cached (tools.ensure_tools).
        """
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        binaries = tools.ensure_tools(["etcd", "kube-apiserver", "kube-controller-manager"])
        pki_dir = workdir / "pki"
        ca = CertificateAuthority.generate()
        (pki_dir).mkdir(parents=True, exist_ok=True)
        (pki_dir / "ca.crt").write_bytes(ca.cert_pem)
        sa_keys = ServiceAccountKeys.generate()
        sa_keys.write(pki_dir)
        admin = ca.issue_admin()

        started: list[ManagedProcess] = []
        try:
            etcd_port, peer_port = free_ports(2)
            etcd_url = f"http://127.0.0.1:{etcd_port}"
            log(f"starting etcd on {etcd_url}")
            etcd = ManagedProcess.start(
                "etcd",
                [
                    binaries["etcd"],
                    "--name=testbed",
                    f"--data-dir={workdir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=testbed=http://127.0.0.1:{peer_port}",
                    "--listen-metrics-urls=",
                    # A test bed: losing the last writes on a crash is fine; speed is not.
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                workdir=workdir,
            )
            started.append(etcd)
            etcd.wait_for_http(f"{etcd_url}/health", timeout=30)

            apiserver, url = _start_apiserver(
                "kube-apiserver",
                binary=binaries["kube-apiserver"],
                workdir=workdir,
                ca=ca,
                sa_keys=sa_keys,
                admin=admin,
                etcd_url=etcd_url,
                etcd_prefix="/host",
                extra_args=(),
            )
            started.append(apiserver)
            kubeconfig = workdir / "admin.kubeconfig"
            kubeconfig.touch(mode=0o600)
            kubeconfig.write_bytes(
                render_kubeconfig(server=url, ca_pem=ca.cert_pem, client=admin, name="testbed")
            )
            kcm = _start_controller_manager(
                "kube-controller-manager",
                binary=binaries["kube-controller-manager"],
                workdir=workdir,
                kubeconfig=kubeconfig,
                ca=ca,
                sa_keys=sa_keys,
                controllers=HOST_CONTROLLERS,
            )
            started.append(kcm)
        except BaseException:
            for proc in reversed(started):
                proc.stop()
            raise
        log(f"host cluster up at {url}; kubeconfig {kubeconfig}")
        return cls(
            workdir=workdir,
            url=url,
            kubeconfig=kubeconfig,
            ca=ca,
            sa_keys=sa_keys,
            admin=admin,
            etcd_url=etcd_url,
            binaries=binaries,
            etcd=etcd,
            apiserver=apiserver,
            controller_manager=kcm,
        )

    def kubeconfig_bytes(self) -> bytes:
        return self.kubeconfig.read_bytes()

    def api_client(self) -> k8s.ApiClient:
        """A new kubernetes ApiClient for the host (admin). Not shared between threads."""
        return api_client_from_kubeconfig(self.kubeconfig)

    def install_crds(
        self, sources: Iterable[str] = DEFAULT_CRD_SOURCES, *, timeout: float = 120.0
    ) -> list[str]:
        """Create (or replace) the CRDs of ``sources``; wait until all are Established.

        Returns the CRD names.
        """
        return install_crds(self.api_client, sources, timeout=timeout)

    def start_workspace_apiserver(
        self,
        name: str,
        extra_args: Sequence[str] = (),
        *,
        controller_manager: bool = True,
    ) -> WorkspaceApiServer:
        """Start a kube-apiserver for Workspace ``name`` on this etcd under
        ``/workspaces/<name>``, with its own CA and certificates and ``extra_args`` last
        (they win over the defaults). Its state survives a restart under the same name.
        """
        if "/" in name or not name:
            raise ValueError(f"invalid workspace API server name {name!r}")
        with self._lock:
            if name in self.workspaces:
                raise ValueError(f"workspace API server {name!r} is already running")
        wdir = self.workdir / "workspaces" / name
        wdir.mkdir(parents=True, exist_ok=True)
        # Like a restarted vCluster pod, a restarted workspace API server keeps its CA, its
        # service-account key (tokens stored in its etcd stay valid) and, if free, its port.
        ca = CertificateAuthority.load_or_generate(wdir / "pki", f"workspace-{name}-ca")
        sa_keys = ServiceAccountKeys.load_or_generate(wdir / "pki")
        admin = ca.issue_admin()
        port_file = wdir / "port"
        previous_port = int(port_file.read_text()) if port_file.is_file() else None
        prefix = f"/workspaces/{name}"
        log(f"starting workspace API server {name!r} (etcd prefix {prefix})")
        apiserver, url = _start_apiserver(
            f"kube-apiserver-{name}",
            binary=self.binaries["kube-apiserver"],
            workdir=wdir,
            ca=ca,
            sa_keys=sa_keys,
            admin=admin,
            etcd_url=self.etcd_url,
            etcd_prefix=prefix,
            extra_args=tuple(extra_args),
            log_dir=self.workdir,
            port=previous_port,
        )
        port_file.write_text(url.rsplit(":", 1)[1])
        kcm: ManagedProcess | None = None
        workspace = WorkspaceApiServer(
            name=name,
            url=url,
            etcd_prefix=prefix,
            extra_args=tuple(extra_args),
            ca_pem=ca.cert_pem,
            admin=admin,
            apiserver=apiserver,
        )
        if controller_manager:
            kubeconfig = wdir / "admin.kubeconfig"
            kubeconfig.touch(mode=0o600)
            kubeconfig.write_bytes(workspace.kubeconfig_bytes())
            try:
                kcm = _start_controller_manager(
                    f"kube-controller-manager-{name}",
                    binary=self.binaries["kube-controller-manager"],
                    workdir=wdir,
                    kubeconfig=kubeconfig,
                    ca=ca,
                    sa_keys=sa_keys,
                    controllers=WORKSPACE_CONTROLLERS,
                    log_dir=self.workdir,
                )
            except BaseException:
                apiserver.stop()
                raise
            workspace.controller_manager = kcm
        with self._lock:
            self.workspaces[name] = workspace
        log(f"workspace API server {name!r} up at {url}")
        return workspace

    def stop_workspace_apiserver(self, name: str) -> None:
        """Stop Workspace ``name``'s API server (its data stays in etcd)."""
        with self._lock:
            workspace = self.workspaces.pop(name, None)
        if workspace is not None:
            workspace.stop()
            log(f"workspace API server {name!r} stopped")

    def processes(self) -> list[ManagedProcess]:
        with self._lock:
            workspaces = list(self.workspaces.values())
        procs = [self.etcd, self.apiserver, self.controller_manager]
        for ws in workspaces:
            procs += ws.processes()
        return procs

    def rss_bytes(self) -> int:
        """Resident memory of every process of the cluster, summed."""
        return sum(p.rss_bytes() for p in self.processes())

    def stop(self) -> None:
        """Stop the workspace API servers, then KCM, kube-apiserver and etcd."""
        for name in list(self.workspaces):
            self.stop_workspace_apiserver(name)
        for proc in (self.controller_manager, self.apiserver, self.etcd):
            proc.stop()
        log("host cluster stopped")


def as_body(manifest: Mapping[str, Any]) -> Any:
    """A manifest (dict) as a request body: the client serializes dicts as they are, though
    its signatures name model classes."""
    return manifest


def install_crds(
    api_client: Callable[[], k8s.ApiClient],
    sources: Iterable[str] = DEFAULT_CRD_SOURCES,
    *,
    timeout: float = 120.0,
) -> list[str]:
    """Create (or replace) the CRDs of ``sources`` in the API server ``api_client()`` reaches;
    wait until all are Established. Returns the CRD names."""
    docs: list[dict[str, Any]] = []
    for source in sources:
        for path in tools.crd_files(source):
            # The C loader: the Kyverno CRDs alone are megabytes of YAML.
            for doc in yaml.load_all(path.read_text(), Loader=_YAML_LOADER):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    docs.append(doc)
    with api_client() as api:
        ext = k8s.ApiextensionsV1Api(api)
        with ThreadPoolExecutor(4) as pool:
            names = list(pool.map(lambda doc: _create_or_replace_crd(ext, doc), docs))
        log(f"created {len(names)} CRDs; waiting until Established")
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in sorted(pending):
                crd = ext.read_custom_resource_definition(name)
                conditions = (crd.status and crd.status.conditions) or []
                if any(c.type == "Established" and c.status == "True" for c in conditions):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not Established in {timeout:.0f}s: {sorted(pending)}")
            if pending:
                time.sleep(0.2)
    log(f"{len(names)} CRDs Established")
    return names


def _create_or_replace_crd(ext: k8s.ApiextensionsV1Api, doc: dict[str, Any]) -> str:
    name = str(doc["metadata"]["name"])
    try:
        ext.create_custom_resource_definition(as_body(doc))
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        assert current.metadata is not None
        doc = {**doc, "metadata": {**doc["metadata"]}}
        doc["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, as_body(doc))
    return name


def _start_apiserver(
    name: str,
    *,
    binary: Path,
    workdir: Path,
    ca: CertificateAuthority,
    sa_keys: ServiceAccountKeys,
    admin: CertKey,
    etcd_url: str,
    etcd_prefix: str,
    extra_args: tuple[str, ...],
    log_dir: Path | None = None,
    port: int | None = None,
) -> tuple[ManagedProcess, str]:
    pki_dir = workdir / "pki"
    pki_dir.mkdir(parents=True, exist_ok=True)
    (pki_dir / "ca.crt").write_bytes(ca.cert_pem)
    serving = ca.issue_serving("kube-apiserver", ip_addresses=[SERVICE_CLUSTER_IP])
    cert, key = serving.write(pki_dir, "apiserver")
    sa_private, sa_public = sa_keys.write(pki_dir)
    if port is None or not _port_is_free(port):
        (port,) = free_ports(1)
    url = f"https://127.0.0.1:{port}"
    # envtest's flag set (controller-runtime pkg/internal/testing/controlplane), plus RBAC.
    args: list[str | Path] = [
        binary,
        "--advertise-address=127.0.0.1",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={pki_dir}",
        f"--tls-cert-file={cert}",
        f"--tls-private-key-file={key}",
        f"--client-ca-file={pki_dir / 'ca.crt'}",
        f"--etcd-servers={etcd_url}",
        f"--etcd-prefix={etcd_prefix}",
        f"--service-account-issuer={url}",
        f"--service-account-key-file={sa_public}",
        f"--service-account-signing-key-file={sa_private}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--profiling=false",
        *extra_args,
    ]
    proc = ManagedProcess.start(name, args, workdir=log_dir or workdir)
    try:
        ctx = _ssl_context(ca.cert_pem, admin, pki_dir)
        proc.wait_for_http(f"{url}/readyz", timeout=90, verify=ctx)
    except BaseException:
        proc.stop()
        raise
    return proc, url


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_controller_manager(
    name: str,
    *,
    binary: Path,
    workdir: Path,
    kubeconfig: Path,
    ca: CertificateAuthority,
    sa_keys: ServiceAccountKeys,
    controllers: Sequence[str],
    log_dir: Path | None = None,
) -> ManagedProcess:
    pki_dir = workdir / "pki"
    sa_private, _ = sa_keys.write(pki_dir)
    (pki_dir / "ca.crt").write_bytes(ca.cert_pem)
    (port,) = free_ports(1)
    proc = ManagedProcess.start(
        name,
        [
            binary,
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={workdir / 'kcm-certs'}",
            f"--service-account-private-key-file={sa_private}",
            f"--root-ca-file={pki_dir / 'ca.crt'}",
            f"--controllers={','.join(controllers)}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        workdir=log_dir or workdir,
    )
    try:
        proc.wait_for_http(f"https://127.0.0.1:{port}/healthz", timeout=60, verify=False)
    except BaseException:
        proc.stop()
        raise
    return proc
