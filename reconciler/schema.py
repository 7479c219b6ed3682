"""Schema checks for every rendered document, before the renderer may return it.

Built-in kinds are checked against the Kubernetes OpenAPI schema of KUBERNETES_VERSION, in the
strict form (unknown fields are errors), from the schemas that `kubernetes-validate` ships.
Custom resources (Flux, Knative, Kyverno) and kustomize's kustomization.yaml are checked
structurally: apiVersion, kind, metadata.name, the required spec fields, and no unknown
top-level spec field; their full CRD schemas are exercised by the end-to-end tier.

Loading the schemas costs tens of milliseconds, so it happens once per process; a validator is
built once per kind and reused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.36"

# Groups whose kinds Kubernetes itself serves (schemas in kubernetes-validate).
_BUILTIN_GROUP = re.compile(r"^(|[a-z0-9-]+|[a-z0-9.-]+\.k8s\.io)$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# RBAC objects accept any path segment name (Hexabase uses ':' in them).
_PATH_SEGMENT_KINDS = frozenset({"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"})


class SchemaError(ValueError):
    """A rendered document that does not match the schema of its kind."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


@dataclass(frozen=True)
class _CustomKind:
    namespaced: bool
    spec_required: frozenset[str] = frozenset()
    spec_fields: frozenset[str] = frozenset()
    one_of: tuple[frozenset[str], ...] = ()  # each set: exactly one of these spec fields
    nested_required: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


# Field names from the v1/v2 API references of Flux 2.7 (GitRepository, Receiver: the CRDs of
# Flux 2.9), Knative Serving 1.x, Kyverno 1.17.
_CUSTOM_KINDS: dict[tuple[str, str], _CustomKind] = {
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): _CustomKind(
        namespaced=True,
        spec_required=_fields("interval"),
        spec_fields=_fields(
            "chart",
            "chartRef",
            "interval",
            "kubeConfig",
            "suspend",
            "releaseName",
            "targetNamespace",
            "storageNamespace",
            "dependsOn",
            "timeout",
            "maxHistory",
            "serviceAccountName",
            "persistentClient",
            "driftDetection",
            "install",
            "upgrade",
            "test",
            "rollback",
            "uninstall",
            "valuesFrom",
            "values",
            "postRenderers",
            "commonMetadata",
        ),
        one_of=(_fields("chart", "chartRef"),),
    ),
    ("source.toolkit.fluxcd.io/v1", "HelmRepository"): _CustomKind(
        namespaced=True,
        spec_required=_fields("url"),
        spec_fields=_fields(
            "url",
            "secretRef",
            "certSecretRef",
            "passCredentials",
            "interval",
            "insecure",
            "timeout",
            "suspend",
            "accessFrom",
            "type",
            "provider",
        ),
    ),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): _CustomKind(
        namespaced=True,
        spec_required=_fields("interval", "prune", "sourceRef"),
        spec_fields=_fields(
            "commonMetadata",
            "components",
            "decryption",
            "deletionPolicy",
            "dependsOn",
            "force",
            "healthChecks",
            "healthCheckExprs",
            "ignoreMissingComponents",
            "images",
            "interval",
            "kubeConfig",
            "namePrefix",
            "nameSuffix",
            "patches",
            "path",
            "postBuild",
            "prune",
            "retryInterval",
            "serviceAccountName",
            "sourceRef",
            "suspend",
            "targetNamespace",
            "timeout",
            "wait",
        ),
        nested_required={"sourceRef": _fields("kind", "name")},
    ),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): _CustomKind(
        namespaced=True,
        spec_required=_fields("interval", "url"),
        spec_fields=_fields(
            "ignore",
            "include",
            "interval",
            "provider",
            "proxySecretRef",
            "recurseSubmodules",
            "ref",
            "secretRef",
            "serviceAccountName",
            "sparseCheckout",
            "suspend",
            "timeout",
            "url",
            "verify",
        ),
    ),
    ("notification.toolkit.fluxcd.io/v1", "Receiver"): _CustomKind(
        namespaced=True,
        spec_required=_fields("resources", "type"),
        spec_fields=_fields(
            "events",
            "interval",
            "oidcProviders",
            "resourceFilter",
            "resources",
            "secretRef",
            "suspend",
            "type",
        ),
    ),
    ("serving.knative.dev/v1", "Service"): _CustomKind(
        namespaced=True,
        spec_required=_fields("template"),
        spec_fields=_fields("template", "traffic"),
    ),
    ("policies.kyverno.io/v1", "ValidatingPolicy"): _CustomKind(
        namespaced=False,
        spec_required=_fields("validations", "matchConstraints"),
        spec_fields=_fields(
            "auditAnnotations",
            "autogen",
            "evaluation",
            "failurePolicy",
            "matchConditions",
            "matchConstraints",
            "validationActions",
            "validations",
            "variables",
            "webhookConfiguration",
        ),
    ),
}

# kustomize's own file (not an API object): the fields Hexabase may write.
_KUSTOMIZE = ("kustomize.config.k8s.io/v1beta1", "Kustomization")
_KUSTOMIZE_FIELDS = _fields(
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "components",
    "namespace",
    "labels",
    "commonAnnotations",
    "patches",
)


@cache
def _schema_dir() -> Any:
    return (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{KUBERNETES_VERSION}.0-local-strict"
    )


@cache
def _registry() -> Registry[Any]:
    definitions = json.loads((_schema_dir() / "_definitions.json").read_text())
    registry: Registry[Any] = Registry().with_resource(
        definitions["$id"], Resource.from_contents(definitions)
    )
    return registry


@cache
def _builtin_validator(api_version: str, kind: str) -> Draft202012Validator | None:
    # kubernetes-validate's file naming: rbac.authorization.k8s.io/v1 -> rbac-v1.
    prefix = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _schema_dir() / f"{kind.lower()}-{prefix}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry = _registry().with_resource(schema["$id"], Resource.from_contents(schema))
    return Draft202012Validator(schema, registry=registry)


def _is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return bool(_BUILTIN_GROUP.fullmatch(group))


def validate(document: Any, *, source: str) -> None:
    """Raise SchemaError(source, problem) unless document is valid for its kind."""
    if not isinstance(document, Mapping):
        raise SchemaError(source, "a document must be a mapping")
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise SchemaError(source, "apiVersion and kind are required strings")
    if (api_version, kind) == _KUSTOMIZE:
        _check_kustomize(document, source)
        return
    _check_name(document, kind, source)
    custom = _CUSTOM_KINDS.get((api_version, kind))
    if custom is not None:
        _check_custom(document, custom, source)
        return
    validator = _builtin_validator(api_version, kind) if _is_builtin(api_version) else None
    if validator is None:
        raise SchemaError(source, f"no schema known for {kind} ({api_version})")
    error = best_match(validator.iter_errors(document))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(document)"
        raise SchemaError(
            source,
            f"{kind} is not valid for Kubernetes {KUBERNETES_VERSION} at {where}: {error.message}",
        )


def _check_name(document: Mapping[str, Any], kind: str, source: str) -> None:
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        raise SchemaError(source, f"{kind} needs metadata.name")
    name = metadata["name"]
    if kind in _PATH_SEGMENT_KINDS:
        ok = name not in ("", ".", "..") and "/" not in name and "%" not in name
    elif kind == "Namespace":
        ok = len(name) <= 63 and bool(_DNS1123_SUBDOMAIN.fullmatch(name)) and "." not in name
    else:
        ok = len(name) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(name))
    if not ok:
        raise SchemaError(source, f"{kind} has an invalid metadata.name {name!r}")


def _check_custom(document: Mapping[str, Any], custom: _CustomKind, source: str) -> None:
    kind = document["kind"]
    unknown_top = set(document) - {"apiVersion", "kind", "metadata", "spec"}
    if unknown_top:
        raise SchemaError(source, f"{kind} has unknown top-level fields {sorted(unknown_top)}")
    namespace = document["metadata"].get("namespace")
    if custom.namespaced and not isinstance(namespace, str):
        raise SchemaError(source, f"{kind} is namespaced and needs metadata.namespace")
    if not custom.namespaced and namespace is not None:
        raise SchemaError(source, f"{kind} is cluster-scoped and must not set metadata.namespace")
    spec = document.get("spec")
    if not isinstance(spec, Mapping):
        raise SchemaError(source, f"{kind} needs a spec mapping")
    missing = custom.spec_required - set(spec)
    if missing:
        raise SchemaError(source, f"{kind} spec is missing {sorted(missing)}")
    unknown = set(spec) - custom.spec_fields
    if unknown:
        raise SchemaError(source, f"{kind} spec has unknown fields {sorted(unknown)}")
    for group in custom.one_of:
        if len(group & set(spec)) != 1:
            raise SchemaError(source, f"{kind} spec needs exactly one of {sorted(group)}")
    for key, required in custom.nested_required.items():
        value = spec.get(key)
        if not isinstance(value, Mapping) or not required <= set(value):
            raise SchemaError(source, f"{kind} spec.{key} needs {sorted(required)}")


def _check_kustomize(document: Mapping[str, Any], source: str) -> None:
    unknown = set(document) - _KUSTOMIZE_FIELDS
    if unknown:
        raise SchemaError(source, f"kustomization has unknown fields {sorted(unknown)}")
    for key in ("resources", "components"):
        entries = document.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise SchemaError(source, f"kustomization {key} must be a list of paths")
        for entry in entries:
            if entry.startswith("/") or ".." in entry.split("/"):
                raise SchemaError(source, f"kustomization {key} entry {entry!r} leaves its dir")
