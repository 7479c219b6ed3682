"""The test bed's binaries build from the Go module proxy (or come from the cache) and run.

A cold build takes many minutes on two cores; with the cache (HEXABASE_TOOLS_DIR or
~/.cache/hexabase/tools) filled it takes a second. A failed build fails the test: it is
never skipped.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from api.testbed import tools

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    return tools.ensure_tools()


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )


def test_every_tool_is_built_into_the_cache_outside_the_repo(built: dict[str, Path]) -> None:
    assert set(built) == set(tools.TOOL_NAMES)
    for name, path in built.items():
        assert path.is_file(), name
        assert path.stat().st_mode & 0o111, f"{path} is not executable"
        assert path == tools.tool_path(name)
        assert path.parent.name == f"{name}-{tools.TOOLS[name].version}"
        assert not path.is_relative_to(REPO), f"{path} is inside the repository"


def test_cached_binaries_are_reused(built: dict[str, Path]) -> None:
    mtimes = {name: path.stat().st_mtime_ns for name, path in built.items()}
    start = time.monotonic()
    again = tools.ensure_tools()
    assert again == built
    assert {name: p.stat().st_mtime_ns for name, p in again.items()} == mtimes
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("name", ["kube-apiserver", "kube-controller-manager"])
def test_kubernetes_binaries_report_the_release_version(built: dict[str, Path], name: str) -> None:
    out = _run(built[name], "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"Kubernetes {tools.VERSIONS.kubernetes}"
    assert tools.VERSIONS.kubernetes == "v1.36.3"


def test_etcd_version(built: dict[str, Path]) -> None:
    out = _run(built["etcd"], "--version")
    assert out.returncode == 0, out.stderr
    assert f"etcd Version: {tools.VERSIONS.etcd.removeprefix('v')}" in out.stdout
    assert tools.VERSIONS.etcd.startswith("v3.6.")


def test_helm_version(built: dict[str, Path]) -> None:
    out = _run(built["helm"], "version", "--short")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(tools.VERSIONS.helm)


@pytest.mark.parametrize("name", sorted(tools.FLUX_CONTROLLERS))
def test_flux_controller_runs(built: dict[str, Path], name: str) -> None:
    out = _run(built[name], "--help")
    assert out.returncode == 0, out.stderr
    assert "--metrics-addr" in out.stdout + out.stderr


@pytest.mark.parametrize("source", sorted(tools.CRD_SOURCES))
def test_crds_come_from_module_zips(source: str) -> None:
    files = tools.crd_files(source)
    assert files, source
    for path in files:
        text = path.read_text()
        assert "kind: CustomResourceDefinition" in text, path


def test_vcluster_chart_comes_from_its_module(tmp_path: Path) -> None:
    chart = tools.vcluster_chart_dir()
    assert (chart / "Chart.yaml").is_file()
    assert (chart / "values.yaml").is_file()
    assert (chart / "templates").is_dir()
    assert tools.VCLUSTER_CHART_VERSION.startswith("0.36.")
    copy = tools.copy_vcluster_chart(tmp_path / "vcluster")
    chart_yaml = (copy / "Chart.yaml").read_text()
    assert f"version: {tools.VCLUSTER_CHART_VERSION}" in chart_yaml
    (copy / "values.yaml").write_text((copy / "values.yaml").read_text())  # writable


def test_a_refused_module_names_module_and_version() -> None:
    # The proxy answers 403 for this exact version.
    with pytest.raises(tools.ToolBuildError) as err:
        tools.download_module("github.com/fluxcd/helm-controller", "v1.7.0")
    msg = str(err.value)
    assert "github.com/fluxcd/helm-controller" in msg
    assert "v1.7.0" in msg
    assert "refused" in msg


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_apiserver_on_etcd_serves_its_release_version(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """etcd and kube-apiserver really run together, and /version says v1.36.3."""
    client, peer, secure = _free_port(), _free_port(), _free_port()
    sa_key = tmp_path / "sa.key"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True
    )
    etcd_args = [
        str(built["etcd"]),
        f"--data-dir={tmp_path / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{client}",
        f"--advertise-client-urls=http://127.0.0.1:{client}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=default=http://127.0.0.1:{peer}",
        "--unsafe-no-fsync",
    ]
    apiserver_args = [
        str(built["kube-apiserver"]),
        f"--etcd-servers=http://127.0.0.1:{client}",
        f"--etcd-prefix=/smoke-{uuid.uuid4().hex[:8]}",
        "--bind-address=127.0.0.1",
        f"--secure-port={secure}",
        f"--cert-dir={tmp_path / 'certs'}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={sa_key}",
        f"--service-account-signing-key-file={sa_key}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--authorization-mode=RBAC",
    ]
    with (
        _process(etcd_args, tmp_path / "etcd.log"),
        _process(apiserver_args, tmp_path / "apiserver.log") as apiserver,
        httpx.Client(verify=False, timeout=5) as http,
    ):
        deadline = time.monotonic() + 180
        body: dict[str, str] = {}
        while time.monotonic() < deadline:
            assert apiserver.poll() is None, (tmp_path / "apiserver.log").read_text()[-3000:]
            try:
                resp = http.get(f"https://127.0.0.1:{secure}/version")
                if resp.status_code == 200:
                    body = resp.json()
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        assert body, (tmp_path / "apiserver.log").read_text()[-3000:]
    assert body["gitVersion"] == tools.VERSIONS.kubernetes
    assert (body["major"], body["minor"]) == ("1", "36")
