"""Rules for names and values that reach a path or YAML. Checked before any template sees them."""

from __future__ import annotations

import re

from croniter import croniter

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS1123_LABEL_RULE = (
    "must be a DNS-1123 label: at most 63 characters, lowercase letters, digits and '-', "
    "starting and ending with a letter or digit"
)

# Organization and workspace names form host namespaces `<org>--<workspace>`: each at most
# 30 characters and free of "--", so the pair can be split back and two tenants never share
# a namespace (org "a" + workspace "b-c" and org "a-b" + workspace "c" stay apart).
TENANT_NAME_MAX = 30
TENANT_NAME_RULE = (
    "must be a DNS-1123 label of at most 30 characters without '--': lowercase letters, "
    "digits and single '-', starting and ending with a letter or digit"
)

GROUP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
GROUP_NAME_RULE = "must be 1-63 characters: letters, digits and '-', starting with a letter"

# Kubernetes resource.Quantity, as apimachinery parses it (sign, digits, optional suffix).
QUANTITY = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
QUANTITY_RULE = "must be a Kubernetes quantity such as 500m, 2, 512Mi or 10Gi"

# An OCI image reference: registry/path[:tag][@digest]; no whitespace or YAML metacharacters.
IMAGE = re.compile(
    r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
IMAGE_RULE = "must be an image reference such as registry.example.com/team/app:1.2"

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_RULE = "must be a C identifier: letters, digits and '_', not starting with a digit"


def is_dns1123_label(value: str) -> bool:
    return bool(DNS1123_LABEL.fullmatch(value))


DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS1035_LABEL_RULE = (
    "must be a DNS-1035 label: at most 63 characters, lowercase letters, digits and '-', "
    "starting with a letter and ending with a letter or digit"
)


def is_dns1035_label(value: str) -> bool:
    return bool(DNS1035_LABEL.fullmatch(value))


def is_tenant_name(value: str) -> bool:
    return len(value) <= TENANT_NAME_MAX and "--" not in value and is_dns1123_label(value)


# `<org>--system` is the organization's own Flux namespace (its GitRepository, Kustomization,
# ServiceAccount and Receiver, from the platform repository), so no workspace may take the
# name: its host namespace would be that very namespace.
RESERVED_WORKSPACE_NAMES = frozenset({"system"})
WORKSPACE_NAME_RULE = (
    TENANT_NAME_RULE + "; 'system' is reserved (<organization>--system is the organization's "
    "Flux namespace)"
)


def is_workspace_name(value: str) -> bool:
    return is_tenant_name(value) and value not in RESERVED_WORKSPACE_NAMES


def is_group_name(value: str) -> bool:
    return bool(GROUP_NAME.fullmatch(value))


def is_quantity(value: str) -> bool:
    return bool(QUANTITY.fullmatch(value))


def is_image(value: str) -> bool:
    return len(value) <= 255 and bool(IMAGE.fullmatch(value))


def is_cron_schedule(value: str) -> bool:
    """Five-field cron as batch/v1 CronJob accepts it (macros such as @hourly too)."""
    if "\n" in value or len(value) > 100:
        return False
    if value.startswith("@"):
        return value in {
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        }
    return len(value.split()) == 5 and bool(croniter.is_valid(value))


def check(value: str, ok: bool, rule: str) -> str:
    """Raise ValueError(rule) unless ok; for pydantic validators."""
    if not ok:
        raise ValueError(rule)
    return value


LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_KEY_RULE = "must be a Kubernetes label key such as node-role/dedicated or example.com/tier"
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
LABEL_VALUE_RULE = "must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.'"
REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$")
REGISTRY_RULE = "must be a registry host such as ghcr.io or registry.example.com:5000/team"
API_GROUP = re.compile(r"^(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")
API_GROUP_RULE = "must be an API group such as '', apps or serving.knative.dev"
RBAC_WORD = re.compile(r"^(\*|[a-z][a-zA-Z0-9/]*)$")
RBAC_WORD_RULE = "must be a resource or verb such as pods, pods/log, get or *"
HTTPS_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$")
URL_RULE = "must be an http(s) URL without query or fragment"


def is_label_key(value: str) -> bool:
    return len(value) <= 316 and bool(LABEL_KEY.fullmatch(value))


def is_label_value(value: str) -> bool:
    return bool(LABEL_VALUE.fullmatch(value))


def is_registry(value: str) -> bool:
    return len(value) <= 255 and bool(REGISTRY.fullmatch(value))


def is_api_group(value: str) -> bool:
    return len(value) <= 253 and bool(API_GROUP.fullmatch(value))


def is_rbac_word(value: str) -> bool:
    return len(value) <= 253 and bool(RBAC_WORD.fullmatch(value))


def is_https_url(value: str) -> bool:
    return len(value) <= 2048 and bool(HTTPS_URL.fullmatch(value))
