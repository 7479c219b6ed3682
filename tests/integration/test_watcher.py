"""The status watcher against a real kube-apiserver with the Flux CRDs: Flux's status is
written through the status subresource here (as the controllers would), so each mapping
case is exact; the testbed's end-to-end tests run the real controllers.

Covers: a workspace followed to `ready` and its changes to `applied`; a failed attempt
marks the change `failed` with a readable reason and a later fix `applied`; transitions are
recorded once, with history; the watcher killed during a burst finds every change in its
final state after a restart; of two watchers only the leader acts, and the standby takes
over when the leader stops."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client as k8s
from sqlalchemy import select

from api.db import models as m
from api.kube import FluxApi
from api.localstack import Stack
from api.testbed.cluster import HostCluster
from api.watcher import StatusWatcher, run_as_leader
from reconciler.gitstore import GitStore

ORG, WS = "wayne", "dev"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostCluster]:
    cluster = HostCluster.start(tmp_path_factory.mktemp("host"))
    try:
        cluster.install_crds(["source-controller", "kustomize-controller", "helm-controller"])
        yield cluster
    finally:
        cluster.stop()


class Flux:
    """Writes Flux objects and their status the way the controllers do."""

    KINDS: ClassVar[dict[str, tuple[str, str, str]]] = {
        "Kustomization": ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
        "HelmRelease": ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
        "GitRepository": ("source.toolkit.fluxcd.io", "v1", "gitrepositories"),
    }

    def __init__(self, host: HostCluster) -> None:
        self.api = host.api_client()
        self.core = k8s.CoreV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)

    def namespace(self, name: str) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except k8s.ApiException as error:
            if error.status != 409:
                raise

    def create(self, kind: str, namespace: str, name: str, spec: dict[str, Any]) -> None:
        group, version, plural = self.KINDS[kind]
        body = {
            "apiVersion": f"{group}/{version}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        try:
            self.custom.create_namespaced_custom_object(group, version, namespace, plural, body)
        except k8s.ApiException as error:
            if error.status != 409:
                raise

    def status(self, kind: str, namespace: str, name: str, **fields: Any) -> None:
        group, version, plural = self.KINDS[kind]
        current = self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        status = {"observedGeneration": current["metadata"]["generation"], **fields}
        self.custom.patch_namespaced_custom_object_status(
            group, version, namespace, plural, name, {"status": status}
        )


def ready(revision: str, *, at: str = "2026-12-04T10:00:00Z") -> dict[str, Any]:
    return {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "ReconciliationSucceeded",
                "message": f"Applied revision: main@sha1:{revision}",
                "lastTransitionTime": at,
            }
        ],
        "lastAppliedRevision": f"main@sha1:{revision}",
        "lastAttemptedRevision": f"main@sha1:{revision}",
    }


def failed(applied: str, attempted: str, message: str) -> dict[str, Any]:
    return {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ReconciliationFailed",
                "message": message,
                "lastTransitionTime": "2026-12-04T10:05:00Z",
            }
        ],
        "lastAppliedRevision": f"main@sha1:{applied}",
        "lastAttemptedRevision": f"main@sha1:{attempted}",
    }


KUSTOMIZATION_SPEC = {
    "interval": "1m",
    "path": "./",
    "prune": True,
    "sourceRef": {"kind": "GitRepository", "name": ORG},
}
HELMRELEASE_SPEC = {
    "interval": "1m",
    "chart": {
        "spec": {"chart": "vcluster", "sourceRef": {"kind": "HelmRepository", "name": "vcluster"}}
    },
}


DEPLOYED = {
    "name": "vcluster",
    "namespace": f"{ORG}--{WS}",
    "version": 1,
    "chartName": "vcluster",
    "chartVersion": "0.36.1",
    "configDigest": "sha256:" + "0" * 64,
    "digest": "sha256:" + "1" * 64,
    "firstDeployed": "2026-12-04T10:00:00Z",
    "lastDeployed": "2026-12-04T10:00:00Z",
    "status": "deployed",
}


def start_watcher(host: HostCluster, stack: Stack) -> tuple[StatusWatcher, threading.Thread]:
    watcher = StatusWatcher(
        api=FluxApi(str(host.kubeconfig)),
        sessions=stack.sessions,
        store=GitStore(stack.settings.repos_path, durability="none"),
        watch_timeout=5,
        recheck_every=0.3,
    )
    thread = threading.Thread(
        target=run_as_leader, args=(watcher,), kwargs={"poll": 0.2}, daemon=True
    )
    thread.start()
    return watcher, thread


def stop_watcher(watcher: StatusWatcher, thread: threading.Thread) -> None:
    watcher.stopping.set()
    thread.join(20)
    watcher.api.close()
    assert not thread.is_alive()


def change_state(stack: Stack, change_id: int) -> m.Change:
    with stack.sessions() as s:
        return s.get_one(m.Change, change_id)


def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_workspace_to_ready_change_failed_then_fixed_with_history(
    host: HostCluster, stack: Stack
) -> None:
    flux = Flux(host)
    with stack.client(stack.token("bruce@example.com")) as client:
        org = client.post("/api/v1/organizations", json={"name": ORG}).json()["resource"]
        ws_change = stack.wait_change(
            client,
            client.post(
                f"/api/v1/organizations/{ORG}/workspaces", json={"name": WS, "plan": "starter"}
            ).json()["change"],
        )
        system, namespace = f"{ORG}--system", f"{ORG}--{WS}"
        for ns in (system, namespace):
            flux.namespace(ns)
        flux.create("Kustomization", system, "host", KUSTOMIZATION_SPEC)
        flux.create("Kustomization", namespace, "hexabase.workspace", KUSTOMIZATION_SPEC)
        flux.create("HelmRelease", namespace, "vcluster", HELMRELEASE_SPEC)
        watcher, thread = start_watcher(host, stack)
        try:
            sha = ws_change["commit_sha"]
            flux.status("Kustomization", system, "host", **ready(sha))
            flux.status(
                "HelmRelease",
                namespace,
                "vcluster",
                conditions=[
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "InstallSucceeded",
                        "message": "ok",
                        "lastTransitionTime": "2026-12-04T10:00:00Z",
                    }
                ],
                history=[DEPLOYED],
            )
            flux.status("Kustomization", namespace, "hexabase.workspace", **ready(sha))
            wait_for(lambda: change_state(stack, ws_change["id"]).state == "applied")
            with stack.sessions() as s:
                ws = s.scalars(select(m.Workspace).where(m.Workspace.name == WS)).one()
                assert ws.state == "ready"

            # A project whose manifests the cluster refuses: its change fails, readably.
            broken = stack.wait_change(
                client,
                client.post(
                    f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects", json={"name": "web"}
                ).json()["change"],
            )
            flux.status("Kustomization", system, "host", **ready(broken["commit_sha"]))
            flux.status(
                "Kustomization",
                namespace,
                "hexabase.workspace",
                **failed(
                    sha,
                    broken["commit_sha"],
                    'ResourceQuota/web/quota dry-run failed (Invalid): ResourceQuota "quota" '
                    "is invalid: spec.hard[pods]: Invalid value",
                ),
            )
            wait_for(lambda: change_state(stack, broken["id"]).state == "failed")
            row = change_state(stack, broken["id"])
            assert row.reason and "refused ResourceQuota/web" in row.reason
            assert row.raw_status and "spec.hard[pods]" in row.raw_status
            wait_for(lambda: stack.sessions().get_one(m.Workspace, ws.id).state == "degraded")

            # The fix: a later commit is applied, so the failed change's content is live.
            fix = stack.wait_change(
                client,
                client.patch(
                    f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects/web",
                    json={"quota": {"pods": "5"}},
                ).json()["change"],
            )
            flux.status("Kustomization", system, "host", **ready(fix["commit_sha"]))
            flux.status(
                "Kustomization", namespace, "hexabase.workspace", **ready(fix["commit_sha"])
            )
            wait_for(lambda: change_state(stack, fix["id"]).state == "applied")
            wait_for(lambda: change_state(stack, broken["id"]).state == "applied")
            wait_for(lambda: stack.sessions().get_one(m.Workspace, ws.id).state == "ready")
            seen = client.get(f"/api/v1/changes/{broken['id']}").json()
            assert [step["state"] for step in seen["history"]] == [
                "pending",
                "committed",
                "failed",
                "applied",
            ]
            assert "refused ResourceQuota/web" in seen["history"][2]["reason"]
            assert seen["state"] == "applied" and seen["settled_at"]
        finally:
            stop_watcher(watcher, thread)
        with stack.sessions() as s:
            events = s.scalars(
                select(m.StateEvent)
                .where(m.StateEvent.entity == "change", m.StateEvent.entity_id == str(broken["id"]))
                .order_by(m.StateEvent.id)
            ).all()
            assert [e.state for e in events] == ["failed", "applied"]  # once each, in order
            ws_events = s.scalars(
                select(m.StateEvent.state)
                .where(m.StateEvent.entity == "workspace")
                .order_by(m.StateEvent.id)
            ).all()
            assert list(ws_events) == ["ready", "degraded", "ready"]
        assert org["id"]


def watcher_process(host: HostCluster, stack: Stack, log: Path) -> subprocess.Popen[bytes]:
    """`hexabase watcher` as its own process, as production runs it."""
    env = {**stack.env, "HEXABASE_KUBECONFIG": str(host.kubeconfig)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", "watcher"], env=env, stdout=out, stderr=out
        )


def test_watcher_killed_during_a_burst_finds_every_change_final_after_restart(
    host: HostCluster, stack: Stack, tmp_path: Path
) -> None:
    flux = Flux(host)
    org_name, system, namespace = "stark", "stark--system", "stark--dev"
    with stack.client(stack.token("tony@example.com")) as client:
        client.post("/api/v1/organizations", json={"name": org_name})
        stack.wait_change(
            client,
            client.post(
                f"/api/v1/organizations/{org_name}/workspaces",
                json={"name": "dev", "plan": "starter"},
            ).json()["change"],
        )
        for ns in (system, namespace):
            flux.namespace(ns)
        flux.create("Kustomization", system, "host", KUSTOMIZATION_SPEC)
        flux.create("Kustomization", namespace, "hexabase.workspace", KUSTOMIZATION_SPEC)
        watcher = watcher_process(host, stack, tmp_path / "watcher.log")
        burst = []
        for i in range(10):
            change = stack.wait_change(
                client,
                client.post(
                    f"/api/v1/organizations/{org_name}/workspaces/dev/projects",
                    json={"name": f"p{i}"},
                ).json()["change"],
            )
            burst.append(change)
            flux.status("Kustomization", system, "host", **ready(change["commit_sha"]))
            flux.status(
                "Kustomization", namespace, "hexabase.workspace", **ready(change["commit_sha"])
            )
            if i == 4:
                watcher.send_signal(signal.SIGKILL)  # mid-burst, mid-whatever it was doing
                assert watcher.wait(10) == -signal.SIGKILL
        assert change_state(stack, burst[-1]["id"]).state == "committed"
        restarted = watcher_process(host, stack, tmp_path / "watcher.log")
        try:
            wait_for(lambda: all(change_state(stack, c["id"]).state == "applied" for c in burst))
        finally:
            restarted.terminate()
            restarted.wait(20)
    with stack.sessions() as s:
        applied = s.scalars(
            select(m.StateEvent.entity_id).where(
                m.StateEvent.entity == "change", m.StateEvent.state == "applied"
            )
        ).all()
    for change in burst:  # each recorded once, however many times it was evaluated
        assert list(applied).count(str(change["id"])) == 1


def test_only_the_leader_acts_and_the_standby_takes_over(
    host: HostCluster, stack: Stack, tmp_path: Path
) -> None:
    flux = Flux(host)
    org_name, system = "oscorp", "oscorp--system"
    with stack.client(stack.token("norman@example.com")) as client:
        first = stack.wait_change(
            client, client.post("/api/v1/organizations", json={"name": org_name}).json()["change"]
        )
        flux.namespace(system)
        flux.create("Kustomization", system, "host", KUSTOMIZATION_SPEC)
        leader = watcher_process(host, stack, tmp_path / "leader.log")
        wait_for(lambda: "this watcher is the leader" in (tmp_path / "leader.log").read_text())
        standby = watcher_process(host, stack, tmp_path / "standby.log")
        try:
            wait_for(lambda: "standing by" in (tmp_path / "standby.log").read_text())
            leader.send_signal(signal.SIGKILL)
            leader.wait(10)
            flux.status("Kustomization", system, "host", **ready(first["commit_sha"]))
            wait_for(lambda: change_state(stack, first["id"]).state == "applied", timeout=30)
            assert "this watcher is the leader" in (tmp_path / "standby.log").read_text()
        finally:
            standby.terminate()
            standby.wait(20)


def test_a_resource_version_too_old_to_resume_from_is_gone_and_the_watcher_lists_again(
    host: HostCluster, stack: Stack
) -> None:
    """The API server's watch cache starts at its own start: resourceVersion 1 is expired, as a
    long-gone watcher's last version would be. The watcher must list again, not stall."""
    from api.kube import FLUX_KINDS, Gone

    api = FluxApi(str(host.kubeconfig))
    kustomizations = next(k for k in FLUX_KINDS if k.kind == "Kustomization")
    try:
        with pytest.raises(Gone):
            for _ in api.watch(kustomizations, "1", timeout_seconds=5):
                pass
        watcher = StatusWatcher(
            api=api,
            sessions=stack.sessions,
            store=GitStore(stack.settings.repos_path, durability="none"),
            watch_timeout=5,
        )
        relists: list[str] = []
        original = watcher._relist

        def counting_relist(kind: Any) -> str:
            relists.append(kind.kind)
            return original(kind) if len(relists) > 1 else "1"  # first: a stale version

        watcher._relist = counting_relist  # type: ignore[method-assign]
        thread = threading.Thread(target=watcher.watch_kind, args=(kustomizations,), daemon=True)
        thread.start()
        wait_for(lambda: len(relists) >= 2, timeout=20)  # 410 -> listed again
        assert watcher.synced.get("Kustomization") is not None
    finally:
        watcher.stopping.set()
        api.close()


class Forwarder:
    """A TCP forwarder in front of the API server that the test can cut and restore: the API
    server 'goes away' for the watcher, and comes back on the same address."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.server.listen(64)
        self.up = threading.Event()
        self.up.set()
        self.conns: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            client, _ = self.server.accept()
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: Any, b: Any) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        import socket

        self.up.clear()
        for sock in self.conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pipes and sends FIN
                sock.close()
        self.conns = []

    def restore(self) -> None:
        self.up.set()


def test_watcher_reconnects_when_the_api_server_comes_back(
    host: HostCluster, stack: Stack, tmp_path: Path
) -> None:
    flux = Flux(host)
    org_name, system = "cyberdyne", "cyberdyne--system"
    port = int(host.url.rsplit(":", 1)[1])
    forwarder = Forwarder(port)
    kubeconfig = tmp_path / "via-forwarder.kubeconfig"
    kubeconfig.write_text(host.kubeconfig.read_text().replace(f":{port}", f":{forwarder.port}"))
    with stack.client(stack.token("miles@example.com")) as client:
        first = stack.wait_change(
            client, client.post("/api/v1/organizations", json={"name": org_name}).json()["change"]
        )
        flux.namespace(system)
        flux.create("Kustomization", system, "host", KUSTOMIZATION_SPEC)
        watcher = StatusWatcher(
            api=FluxApi(str(kubeconfig)),
            sessions=stack.sessions,
            store=GitStore(stack.settings.repos_path, durability="none"),
            watch_timeout=5,
            recheck_every=3600,  # only the watch may notice the change
        )
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(watcher.synced) == 3)
            forwarder.cut()  # the API server goes away
            flux.status("Kustomization", system, "host", **ready(first["commit_sha"]))
            time.sleep(3)
            assert change_state(stack, first["id"]).state == "committed"
            forwarder.restore()  # and comes back: the watcher reconnects and catches up
            wait_for(lambda: change_state(stack, first["id"]).state == "applied", timeout=40)
        finally:
            watcher.stopping.set()
            thread.join(10)
            watcher.api.close()
