"""The vCluster stand-in's pure parts: which Helm release a HelmRelease installs, which
API-server arguments and kubeconfig Secrets the rendered vCluster config asks for, and the
StatefulSet status that kstatus (helm-controller's wait) reads as Current."""

from __future__ import annotations

from typing import Any

from api.testbed.vcluster import (
    ReleaseRef,
    apiserver_extra_args,
    is_vcluster_release,
    kubeconfig_secrets,
    ready_statefulset_status,
    release_ref,
)


def helmrelease(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "vcluster", "namespace": "acme--dev"}, "spec": spec}


def test_release_name_follows_helm_controller() -> None:
    assert release_ref(helmrelease()) == ReleaseRef(
        "acme--dev", "vcluster", "acme--dev", "vcluster"
    )
    assert release_ref(helmrelease(releaseName="vc")).release_name == "vc"
    target = release_ref(helmrelease(targetNamespace="other"))
    assert (target.release_namespace, target.release_name) == ("other", "other-vcluster")
    long = release_ref(helmrelease(releaseName="x" * 60)).release_name
    assert len(long) == 53 and long.startswith("x" * 40 + "-")


def test_server_name_is_unique_per_release() -> None:
    a = ReleaseRef("a-b", "hr", "a-b", "c")
    b = ReleaseRef("a", "hr", "a", "b-c")
    assert a.server_name != b.server_name
    assert "/" not in a.server_name


def test_only_vcluster_charts_are_stood_in_for() -> None:
    assert is_vcluster_release(helmrelease(chart={"spec": {"chart": "vcluster"}}))
    assert not is_vcluster_release(helmrelease(chart={"spec": {"chart": "podinfo"}}))
    assert not is_vcluster_release(helmrelease())


def test_extra_args_come_from_the_k8s_distro_api_server() -> None:
    config = {
        "controlPlane": {
            "distro": {"k8s": {"apiServer": {"extraArgs": ["--oidc-client-id=ws", "--v=2"]}}}
        }
    }
    assert apiserver_extra_args(config) == ("--oidc-client-id=ws", "--v=2")
    assert apiserver_extra_args({}) == ()
    assert apiserver_extra_args({"controlPlane": {"distro": None}}) == ()


def test_kubeconfig_secrets_default_and_configured() -> None:
    ref = ReleaseRef("acme--dev", "vcluster", "acme--dev", "vcluster")
    assert kubeconfig_secrets({}, ref) == [("acme--dev", "vc-vcluster")]
    config = {
        "exportKubeConfig": {
            "secret": {"name": "", "namespace": ""},
            "additionalSecrets": [{"name": "ws-kubeconfig"}, {"namespace": "flux-system"}],
        }
    }
    assert kubeconfig_secrets(config, ref) == [
        ("acme--dev", "vc-vcluster"),
        ("acme--dev", "ws-kubeconfig"),
        ("flux-system", "vc-vcluster"),
    ]


def test_ready_status_is_what_kstatus_calls_current() -> None:
    sts = {"metadata": {"name": "vcluster", "generation": 3}, "spec": {"replicas": 1}}
    status = ready_statefulset_status(sts)
    assert status["observedGeneration"] == 3
    for key in (
        "replicas",
        "readyReplicas",
        "currentReplicas",
        "updatedReplicas",
        "availableReplicas",
    ):
        assert status[key] == 1
    assert status["currentRevision"] == status["updateRevision"]
