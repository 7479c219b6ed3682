"""The test bed's HTTP servers: Git smart HTTP (clone and fetch with the real git client,
pushes refused) and the Helm repository holding the vCluster chart, which renders the
objects the vCluster stand-in relies on."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from api.testbed.chartrepo import ChartRepository
from api.testbed.gitserver import GitHttpServer
from api.testbed.tools import VCLUSTER_CHART_VERSION, ensure_tools

pytestmark = pytest.mark.integration


def git(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def served_repo(tmp_path: Path) -> Iterator[tuple[GitHttpServer, Path]]:
    repos = tmp_path / "repos"
    assert git("init", "-q", "--bare", "--initial-branch=main", repos / "acme.git").returncode == 0
    work = tmp_path / "work"
    assert git("init", "-q", "--initial-branch=main", work).returncode == 0
    (work / "README.md").write_text("tenant repo\n")
    git("add", ".", cwd=work)
    git("commit", "-qm", "first", cwd=work)
    assert git("push", "-q", repos / "acme.git", "main", cwd=work).returncode == 0
    server = GitHttpServer.start(repos)
    yield server, work
    server.stop()


@pytest.mark.parametrize("protocol", ["0", "2"])
def test_git_clone_and_fetch_over_smart_http(
    served_repo: tuple[GitHttpServer, Path], tmp_path: Path, protocol: str
) -> None:
    server, work = served_repo
    clone = tmp_path / "clone"
    cloned = git("-c", f"protocol.version={protocol}", "clone", server.repo_url("acme"), clone)
    assert cloned.returncode == 0, cloned.stderr
    assert (clone / "README.md").read_text() == "tenant repo\n"

    (work / "more.txt").write_text("x" * 200_000)
    git("add", ".", cwd=work)
    git("commit", "-qm", "second", cwd=work)
    git("push", "-q", server.repos_dir / "acme.git", "main", cwd=work)
    fetched = git("-c", f"protocol.version={protocol}", "pull", "-q", cwd=clone)
    assert fetched.returncode == 0, fetched.stderr
    assert (clone / "more.txt").stat().st_size == 200_000


def test_git_server_refuses_pushes(served_repo: tuple[GitHttpServer, Path]) -> None:
    server, work = served_repo
    pushed = git("push", server.repo_url("acme"), "main:other", cwd=work)
    assert pushed.returncode != 0
    assert "403" in pushed.stderr


def test_unknown_repository_is_not_found(served_repo: tuple[GitHttpServer, Path]) -> None:
    server, _ = served_repo
    response = httpx.get(f"{server.repo_url('nope')}/info/refs?service=git-upload-pack")
    assert response.status_code == 404


def test_chart_repository_serves_the_vcluster_chart(tmp_path: Path) -> None:
    repo = ChartRepository.start(tmp_path)
    try:
        index = yaml.safe_load(httpx.get(f"{repo.url}/index.yaml").text)
        (entry,) = index["entries"]["vcluster"]
        assert entry["version"] == VCLUSTER_CHART_VERSION
        (url,) = entry["urls"]
        assert url.startswith(repo.url)
        chart = httpx.get(url)
        assert chart.status_code == 200 and chart.content[:2] == b"\x1f\x8b"
    finally:
        repo.stop()


def test_vcluster_chart_renders_what_the_standin_reads(tmp_path: Path) -> None:
    """StatefulSet ``<release>`` and Secret ``vc-config-<release>`` whose config.yaml holds
    the API-server extraArgs: if a chart update moves them, the stand-in must follow."""
    helm = ensure_tools(["helm"])["helm"]
    repo = ChartRepository.start(tmp_path)
    repo.stop()
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "controlPlane": {
                    "distro": {
                        "k8s": {"enabled": True, "apiServer": {"extraArgs": ["--oidc-client-id=x"]}}
                    }
                }
            }
        )
    )
    rendered = subprocess.run(
        [
            helm,
            "template",
            "ws",
            repo.charts[0],
            "-n",
            "acme--dev",
            "-f",
            values,
            "--kube-version",
            "1.36.3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    assert ("StatefulSet", "ws") in docs
    secret = docs[("Secret", "vc-config-ws")]
    config = yaml.safe_load(base64.b64decode(secret["data"]["config.yaml"]))
    assert config["controlPlane"]["distro"]["k8s"]["apiServer"]["extraArgs"] == [
        "--oidc-client-id=x"
    ]
