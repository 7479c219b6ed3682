"""The test bed's binaries build from the Go module proxy (or come from the cache) and run.

A cold build takes many minutes on two cores; with the cache (HEXABASE_TOOLS_DIR or
~/.cache/hexabase/tools) filled it takes a second. A failed build fails the test: it is
never skipped.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

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
