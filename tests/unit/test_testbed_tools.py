"""Pure parts of the tool builder: wrapper go.mod generation and proxy-refusal messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.testbed import tools


def test_kubernetes_wrapper_points_staging_modules_at_published_versions() -> None:
    spec = tools.TOOLS["kube-apiserver"]
    upstream = {
        "Go": "1.26.0",
        "Godebug": [{"Key": "default", "Value": "go1.26"}],
        "Replace": [
            {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "./staging/src/k8s.io/api"}},
            {
                "Old": {"Path": "k8s.io/client-go"},
                "New": {"Path": "./staging/src/k8s.io/client-go"},
            },
        ],
    }
    go_mod = tools.wrapper_go_mod(spec, upstream)
    assert "require k8s.io/kubernetes v1.36.3" in go_mod
    assert "\tk8s.io/api => k8s.io/api v0.36.3" in go_mod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.36.3" in go_mod
    assert "godebug default=go1.26" in go_mod
    assert "go 1.26.0" in go_mod


def test_flux_wrapper_copies_replaces_except_local_paths() -> None:
    spec = tools.TOOLS["source-controller"]
    upstream = {
        "Go": "1.26.0",
        "Replace": [
            {"Old": {"Path": "github.com/fluxcd/source-controller/api"}, "New": {"Path": "./api"}},
            {
                "Old": {"Path": "github.com/opencontainers/go-digest"},
                "New": {"Path": "github.com/opencontainers/go-digest", "Version": "v1.0.1-x"},
            },
        ],
    }
    go_mod = tools.wrapper_go_mod(spec, upstream)
    assert "./api" not in go_mod
    assert (
        "\tgithub.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-x"
        in go_mod
    )
    assert f"require github.com/fluxcd/source-controller {spec.version}" in go_mod


def test_refusal_names_module_and_version() -> None:
    out = (
        "go: downloading k8s.io/api v0.36.3\n"
        "go: k8s.io/streaming@v0.36.3: reading https://proxy.golang.org/k8s.io/streaming/"
        "@v/v0.36.3.mod: 403 Forbidden\n\tserver response: This module version is not available."
    )
    msg = tools._explain_refusal(out)
    assert msg is not None
    assert "k8s.io/streaming" in msg
    assert "v0.36.3" in msg
    assert "403" in msg


def test_versions_live_in_one_place() -> None:
    assert tools.VERSIONS.kubernetes_staging == "v0.36.3"
    assert dict(tools.VERSIONS.flux_controllers) == dict(tools.FLUX_CONTROLLERS)
    assert len(tools.FLUX_CONTROLLERS) == 4
    for name, version in tools.FLUX_CONTROLLERS.items():
        assert tools.TOOLS[name].version == version


def test_cache_dir_is_overridable_and_keyed_by_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEXABASE_TOOLS_DIR", str(tmp_path))
    assert tools.tool_path("etcd") == tmp_path.resolve() / "etcd-v3.6.16" / "etcd"
    with pytest.raises(tools.ToolBuildError, match="unknown tool"):
        tools.tool_path("kubelet")
