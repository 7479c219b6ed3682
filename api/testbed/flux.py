"""The four Flux controllers (source, kustomize, helm, notification) as local processes that
reach the host API server through KUBECONFIG, each on its own 127.0.0.1 ports.

source-controller serves artifacts on ``storage_addr`` and advertises that address
(``--storage-adv-addr``) in each artifact's URL: the other controllers download from there.
The three reconcilers send their events to notification-controller's events address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from api.testbed import tools
from api.testbed.cluster import log
from api.testbed.processes import ManagedProcess, free_ports

#: Namespace the controllers believe they run in (RUNTIME_NAMESPACE); they watch all.
RUNTIME_NAMESPACE = "flux-system"


@dataclass
class FluxControllers:
    """Running Flux controllers; ``receiver_url`` is the webhook Receiver base URL."""

    workdir: Path
    storage_url: str
    events_url: str
    receiver_url: str
    processes: dict[str, ManagedProcess] = field(repr=False)
    health_ports: dict[str, int] = field(repr=False)

    @classmethod
    def start(
        cls,
        workdir: Path,
        kubeconfig: Path,
        *,
        storage_port: int | None = None,
        log_level: str = "info",
        requeue_dependency: str = "5s",
        timeout: float = 60.0,
    ) -> FluxControllers:
        """Start the four controllers with KUBECONFIG=``kubeconfig``; wait until each
        answers /readyz. Logs go to ``<workdir>/logs/<controller>.log``."""
        workdir = workdir.resolve()
        storage_path = workdir / "source-storage"
        storage_path.mkdir(parents=True, exist_ok=True)  # source-controller wants it present
        binaries = tools.ensure_tools(list(tools.FLUX_CONTROLLERS))
        ports = free_ports(11)
        storage_port = storage_port or ports[0]
        events_port, receiver_port = ports[1], ports[2]
        metrics = dict(zip(tools.FLUX_CONTROLLERS, ports[3:7], strict=True))
        health = dict(zip(tools.FLUX_CONTROLLERS, ports[7:11], strict=True))
        storage_addr = f"127.0.0.1:{storage_port}"
        events_url = f"http://127.0.0.1:{events_port}"
        env = {
            "KUBECONFIG": str(kubeconfig.resolve()),
            "RUNTIME_NAMESPACE": RUNTIME_NAMESPACE,
        }
        common = [
            "--watch-all-namespaces",
            f"--log-level={log_level}",
            "--log-encoding=console",
        ]
        specific: dict[str, list[str]] = {
            "source-controller": [
                f"--storage-path={storage_path}",
                f"--storage-addr={storage_addr}",
                f"--storage-adv-addr={storage_addr}",
                f"--events-addr={events_url}",
                f"--requeue-dependency={requeue_dependency}",
            ],
            "kustomize-controller": [
                f"--events-addr={events_url}",
                f"--requeue-dependency={requeue_dependency}",
            ],
            "helm-controller": [
                f"--events-addr={events_url}",
                f"--requeue-dependency={requeue_dependency}",
            ],
            "notification-controller": [
                f"--events-addr=127.0.0.1:{events_port}",
                f"--receiverAddr=127.0.0.1:{receiver_port}",
            ],
        }
        processes: dict[str, ManagedProcess] = {}
        try:
            for name in tools.FLUX_CONTROLLERS:
                log(f"starting {name} {tools.FLUX_CONTROLLERS[name]}")
                processes[name] = ManagedProcess.start(
                    name,
                    [
                        binaries[name],
                        *common,
                        f"--metrics-addr=127.0.0.1:{metrics[name]}",
                        f"--health-addr=127.0.0.1:{health[name]}",
                        *specific[name],
                    ],
                    workdir=workdir,
                    env=env,
                )
            for name, proc in processes.items():
                proc.wait_for_http(f"http://127.0.0.1:{health[name]}/readyz", timeout=timeout)
        except BaseException:
            for proc in reversed(processes.values()):
                proc.stop()
            raise
        log(f"Flux controllers ready (artifacts at http://{storage_addr})")
        return cls(
            workdir=workdir,
            storage_url=f"http://{storage_addr}",
            events_url=events_url,
            receiver_url=f"http://127.0.0.1:{receiver_port}",
            processes=processes,
            health_ports=health,
        )

    def rss_bytes(self) -> int:
        return sum(p.rss_bytes() for p in self.processes.values())

    def stop(self) -> None:
        for proc in reversed(self.processes.values()):
            proc.stop()
        log("Flux controllers stopped")
