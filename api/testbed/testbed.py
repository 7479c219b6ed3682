"""The whole testbed on one machine, without Docker: a real host control plane, the real Flux
controllers, the tenant and platform repositories over smart HTTP, the vCluster chart in a
local Helm repository, a kube-apiserver standing in for every workspace's vCluster, and
Hexabase itself (API, worker, status watcher) wired to all of it.

`hexabase testbed up` runs it in the foreground (Ctrl-C or `hexabase testbed down` stops
everything it started); the end-to-end tests and `python -m bench.apply` use `Testbed.start`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from api.db.migrate import upgrade
from api.embedded import EmbeddedNats, EmbeddedPostgres, free_port, wait_for_port
from api.testbed.chartrepo import ChartRepository
from api.testbed.cluster import HostCluster, as_body, log
from api.testbed.flux import FluxControllers
from api.testbed.gitserver import GitHttpServer
from api.testbed.processes import ManagedProcess
from api.testbed.vcluster import VClusterStandIn
from reconciler.gitstore import GitStore, Person
from reconciler.platform import (
    PLATFORM_RECEIVER,
    PLATFORM_REPO_ID,
    is_managed,
    receiver_token_secret,
    render_platform,
    skeleton_files,
)
from reconciler.spec import PlatformSpec

STATE_FILE = "testbed.json"
FLUX_SYSTEM = "flux-system"
PLATFORM = "platform"
# kube-apiserver insists on an https issuer; it need not answer for the servers to start.
ISSUER_URL = "https://hexabase.testbed.local"
PLATFORM_INTERVAL = "5s"  # the platform repository has no Receiver: poll it quickly
ADDON_CRDS = ("knative-serving", "kyverno")  # platform add-ons inside every vCluster


@dataclass
class Testbed:
    workdir: Path
    host: HostCluster
    flux: FluxControllers
    git: GitHttpServer
    charts: ChartRepository
    standin: VClusterStandIn
    postgres: EmbeddedPostgres
    nats: EmbeddedNats
    env: dict[str, str]
    api_url: str
    hexabase: list[ManagedProcess] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, *, port: int | None = None, workers: int = 1) -> Testbed:
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        started: list[Any] = []
        try:
            host = HostCluster.start(workdir / "cluster")
            started.append(host)
            host.install_crds(
                [
                    "source-controller",
                    "kustomize-controller",
                    "helm-controller",
                    "notification-controller",
                ]
            )
            flux = FluxControllers.start(workdir / "flux", host.kubeconfig)
            started.append(flux)
            repos = workdir / "hexabase" / "repos"
            repos.mkdir(parents=True, exist_ok=True)
            git = GitHttpServer.start(repos)
            started.append(git)
            charts = ChartRepository.start(workdir / "charts")
            started.append(charts)
            standin = VClusterStandIn.start(host, addon_crds=ADDON_CRDS)
            started.append(standin)
            log("starting PostgreSQL and NATS for Hexabase")
            postgres = EmbeddedPostgres.start(workdir / "postgres")
            started.append(postgres)
            nats = EmbeddedNats.start(workdir / "nats")
            started.append(nats)
            if "hexabase" not in postgres.server.psql("SELECT datname FROM pg_database;"):
                postgres.create_database("hexabase")
            database_url = postgres.url("hexabase")
            upgrade(database_url)
            port = port or free_port()
            env = {
                "HEXABASE_ENVIRONMENT": "development",
                "HEXABASE_DATABASE_URL": database_url,
                "HEXABASE_NATS_URL": nats.url,
                "HEXABASE_DATA_DIR": str(workdir / "hexabase"),
                "HEXABASE_REPOS_DIR": str(repos),
                "HEXABASE_PORT": str(port),
                "HEXABASE_ISSUER_URL": ISSUER_URL,
                "HEXABASE_GIT_BASE_URL": git.url,
                "HEXABASE_RECEIVER_BASE_URL": flux.receiver_url,
                "HEXABASE_RECEIVER_TOKEN": secrets.token_hex(24),
                "HEXABASE_KUBECONFIG": str(host.kubeconfig),
                "HEXABASE_VCLUSTER_CHART_REPOSITORY": charts.url,
                "HEXABASE_ACK_WAIT": "5",
            }
            testbed = cls(
                workdir=workdir,
                host=host,
                flux=flux,
                git=git,
                charts=charts,
                standin=standin,
                postgres=postgres,
                nats=nats,
                env=env,
                api_url=f"http://127.0.0.1:{port}",
            )
        except BaseException:
            for part in reversed(started):
                part.stop()
            raise
        try:
            testbed._bootstrap_platform()
            testbed._start_hexabase(workers)
            testbed._spawn(testbed._receiver_secrets_forever)
            testbed._write_state()
        except BaseException:
            testbed.stop()
            raise
        log(f"testbed up: Hexabase at {testbed.api_url}; kubeconfig {host.kubeconfig}")
        return testbed

    # -- parts ----------------------------------------------------------------------------

    def _bootstrap_platform(self) -> None:
        """Flux's own source: the platform repository (created here if Hexabase has not yet),
        applied to the host by a Kustomization in flux-system."""
        store = GitStore(self.env["HEXABASE_REPOS_DIR"], durability="none")
        if not store.exists(PLATFORM_REPO_ID):
            bot = Person("Hexabase testbed", "testbed@hexabase.local")
            store.create(PLATFORM_REPO_ID, skeleton_files(), author=bot, subject="Bootstrap")
            store.commit_rendered(
                PLATFORM_REPO_ID,
                render_platform(PlatformSpec(git_base_url=self.git.url)),
                is_managed=is_managed,
                author=bot,
                subject="Bootstrap the platform repository",
            )
        with self.host.api_client() as api:
            core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
            _create(lambda: core.create_namespace(as_body({"metadata": {"name": FLUX_SYSTEM}})))
            source = {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": PLATFORM, "namespace": FLUX_SYSTEM},
                "spec": {
                    "url": self.git.repo_url(PLATFORM_REPO_ID),
                    "ref": {"branch": "main"},
                    "interval": PLATFORM_INTERVAL,
                },
            }
            sync = {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": PLATFORM, "namespace": FLUX_SYSTEM},
                "spec": {
                    "path": "./",
                    "prune": True,
                    "interval": PLATFORM_INTERVAL,
                    "sourceRef": {"kind": "GitRepository", "name": PLATFORM},
                },
            }
            _create(
                lambda: custom.create_namespaced_custom_object(
                    "source.toolkit.fluxcd.io", "v1", FLUX_SYSTEM, "gitrepositories", source
                )
            )
            _create(
                lambda: custom.create_namespaced_custom_object(
                    "kustomize.toolkit.fluxcd.io", "v1", FLUX_SYSTEM, "kustomizations", sync
                )
            )
            # The platform repository's Receiver: the worker notifies it after each platform
            # commit, so a new organization's namespaces appear at once (polling stays on).
            secret = receiver_token_secret("platform", self.env["HEXABASE_RECEIVER_TOKEN"])
            secret["metadata"]["namespace"] = PLATFORM_RECEIVER.namespace
            _create(lambda: core.create_namespaced_secret(FLUX_SYSTEM, as_body(secret)))
            receiver = {
                "apiVersion": "notification.toolkit.fluxcd.io/v1",
                "kind": "Receiver",
                "metadata": {"name": PLATFORM_RECEIVER.name, "namespace": FLUX_SYSTEM},
                "spec": {
                    "type": "github",
                    "events": ["push"],
                    "secretRef": {"name": secret["metadata"]["name"]},
                    "resources": [{"kind": "GitRepository", "name": PLATFORM}],
                },
            }
            _create(
                lambda: custom.create_namespaced_custom_object(
                    "notification.toolkit.fluxcd.io", "v1", FLUX_SYSTEM, "receivers", receiver
                )
            )

    def _start_hexabase(self, workers: int) -> None:
        env = {**os.environ, **self.env}
        logs = self.workdir / "hexabase"
        commands = (
            [("hexabase-api", "api")]
            + [(f"hexabase-worker-{i}", "worker") for i in range(workers)]
            + [("hexabase-watcher", "watcher")]
        )
        for name, command in commands:
            self.hexabase.append(
                ManagedProcess.start(
                    name, [sys.executable, "-m", "api.cli", command], workdir=logs, env=env
                )
            )
        wait_for_port(int(self.env["HEXABASE_PORT"]), timeout=60, what="hexabase api")

    def _spawn(self, target: Any) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _receiver_secrets_forever(self) -> None:
        """Every organization's Receiver reads its token from a Secret that must never be in
        Git: the platform (here, the testbed) creates it once the namespace exists."""
        done: set[str] = set()
        token = self.env["HEXABASE_RECEIVER_TOKEN"]
        while not self._stopping.wait(0.5):
            try:
                with self.host.api_client() as api:
                    core = k8s.CoreV1Api(api)
                    for ns in core.list_namespace().items:
                        name = ns.metadata.name if ns.metadata else ""
                        if not name or not name.endswith("--system") or name in done:
                            continue
                        secret = receiver_token_secret(name.removesuffix("--system"), token)
                        try:
                            core.create_namespaced_secret(name, as_body(secret))
                        except k8s.ApiException as error:
                            if error.status != 409:
                                raise
                        done.add(name)
            except Exception as error:  # the API server restarting; try again shortly
                log(f"receiver secrets: {error}")

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "api_url": self.api_url,
            "kubeconfig": str(self.host.kubeconfig),
            "env": self.env,
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2))
        # What `hexabase token create` (and any other CLI command) reads to find this stack.
        data_dir = Path(self.env["HEXABASE_DATA_DIR"])
        (data_dir / "runtime.json").write_text(
            json.dumps(
                {
                    "database_url": self.env["HEXABASE_DATABASE_URL"],
                    "nats_url": self.env["HEXABASE_NATS_URL"],
                }
            )
        )

    def rss_bytes(self) -> int:
        total = self.host.rss_bytes() + self.flux.rss_bytes()
        return total + sum(p.rss_bytes() for p in self.hexabase)

    def stop(self) -> None:
        self._stopping.set()
        for proc in reversed(self.hexabase):
            proc.stop()
        for part in (self.standin, self.charts, self.git, self.flux):
            part.stop()
        self.nats.stop()
        self.postgres.stop()
        self.host.stop()
        (self.workdir / STATE_FILE).unlink(missing_ok=True)
        log("testbed down: everything it started has stopped")


def _create(call: Any) -> None:
    """Create, treating 'already exists' as done."""
    try:
        call()
    except k8s.ApiException as error:
        if error.status != 409:
            raise


def up(workdir: Path, *, port: int | None) -> None:
    """Foreground: start, print how to reach it, wait for Ctrl-C or `testbed down`."""
    started = time.monotonic()
    testbed = Testbed.start(workdir, port=port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"""
Testbed up in {time.monotonic() - started:.0f} s.
  Hexabase API   {testbed.api_url}
  first token    HEXABASE_DATA_DIR={testbed.env["HEXABASE_DATA_DIR"]} \
                 ./hexabase token create --email you@example.com
  kubeconfig     {testbed.host.kubeconfig}
                 (the host; each workspace's is in Secret vc-vcluster of <org>--<workspace>)
  repositories   {testbed.git.url}/<organization id>.git
  memory         {testbed.rss_bytes() / 2**30:.2f} GiB RSS
Stop with Ctrl-C or `./hexabase testbed down`.
""",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        testbed.stop()


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent to reap it (it has finished)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def down(workdir: Path, *, timeout: float = 120.0) -> bool:
    """Stop a testbed started by `up` from another shell; True if one was running."""
    state_file = workdir.resolve() / STATE_FILE
    if not state_file.exists():
        return False
    pid = int(json.loads(state_file.read_text())["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        state_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    raise TimeoutError(f"testbed (pid {pid}) did not stop within {timeout:.0f} s")
