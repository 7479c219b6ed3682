"""Schema checks: built-in kinds against Kubernetes 1.36, custom kinds structurally.

Covers: valid documents pass; unknown fields, wrong types, missing names, unknown kinds and
malformed Flux/Kyverno/Knative/kustomize documents fail with an error naming the file.
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.schema import SchemaError, validate


def _namespace(**extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}, **extra}


def _kustomization(**spec: Any) -> dict[str, Any]:
    base = {"interval": "10m", "prune": True, "sourceRef": {"kind": "GitRepository", "name": "o"}}
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "ws", "namespace": "o-ws"},
        "spec": {**base, **spec},
    }


def test_valid_builtin_document_passes() -> None:
    validate(_namespace(), source="ns.yaml")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (_namespace(spec={"finalizers": "kubernetes"}), "spec.finalizers"),
        (_namespace(bogus=1), "bogus"),
        ({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}, "metadata.name"),
        (_namespace(metadata={"name": "x" * 64}), "invalid metadata.name"),
        (
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "c"},
                "spec": {"schedule": 5, "jobTemplate": {}},
            },
            "spec.schedule",
        ),
        (
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
            "no schema",
        ),
        ({"kind": "Namespace"}, "apiVersion and kind"),
    ],
)
def test_invalid_builtin_documents_fail_naming_the_file(document: Any, problem: str) -> None:
    with pytest.raises(SchemaError) as info:
        validate(document, source="some/file.yaml")
    assert str(info.value).startswith("some/file.yaml: ")
    assert problem in str(info.value)


def test_valid_flux_kustomization_passes() -> None:
    validate(_kustomization(path="./x", kubeConfig={"secretRef": {"name": "vc"}}), source="s")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (_kustomization(pathh="./x"), "unknown fields ['pathh']"),
        ({**_kustomization(), "spec": {"interval": "1m", "prune": True}}, "missing ['sourceRef']"),
        (_kustomization(sourceRef={"kind": "GitRepository"}), "sourceRef needs"),
        ({**_kustomization(), "metadata": {"name": "ws"}}, "needs metadata.namespace"),
        (
            {
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": {"name": "r", "namespace": "n"},
                "spec": {"interval": "1m"},
            },
            "exactly one of ['chart', 'chartRef']",
        ),
        (
            {
                "apiVersion": "policies.kyverno.io/v1",
                "kind": "ValidatingPolicy",
                "metadata": {"name": "p", "namespace": "n"},
                "spec": {"validations": [], "matchConstraints": {}},
            },
            "cluster-scoped",
        ),
        (
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../../etc"],
            },
            "leaves its dir",
        ),
    ],
)
def test_invalid_custom_documents_fail(document: Any, problem: str) -> None:
    with pytest.raises(SchemaError, match=None) as info:
        validate(document, source="f.yaml")
    assert problem in str(info.value)
