"""The pure renderer: TenantSpec -> {path: bytes} of the Organization's tenant repository.

No I/O beyond reading templates (once per process). Each file goes through the same steps:
a Jinja template lays out structure and passes every value through the `q` filter (a
double-quoted scalar, so a value is always data, never YAML syntax); the text is parsed back,
every document is checked against the schema of its kind, and the documents are re-emitted by
`yamlio` in one canonical style under a "managed" header. Same spec, same bytes.

The repository layout is a public contract: see gitops-repo-skeleton/README.md.j2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from reconciler import names, schema, yamlio
from reconciler.spec import (
    EnvVar,
    LimitRangeSpec,
    OrganizationSpec,
    PlanSpec,
    ProjectSpec,
    TenantSpec,
    Toleration,
    WorkspaceSpec,
)

LAYOUT_VERSION = 1
MANAGED_HEADER = (
    "# Managed by Hexabase: changes here are overwritten; "
    "change it through the Hexabase API or UI.\n"
)
MANAGED_PREFIXES = ("host/", "workspaces/")
MANAGED_GLOBS = ("host/**", "workspaces/**")
UNMANAGED_GLOBS = ("workspaces/*/projects/*/apps/**",)

# Names shared with the platform repository and the status watcher.
# Every tenant host namespace contains "--" (organization and workspace names cannot), so none
# can equal a system namespace. The organization's own Flux objects (its GitRepository, named
# after the organization, the `host` Kustomization, ServiceAccount and Receiver) live in
# `<org>--system`, rendered by the platform repository; the workspace name "system" is refused.
SYSTEM_WORKSPACE = "system"
# The ServiceAccount Flux impersonates for a tenant, in `<org>--system` (the org's `host`
# Kustomization) and in every `<org>--<ws>` (the vCluster HelmRelease); the platform repository
# creates it and binds it to the ClusterRole `hexabase:tenant-host` in the org's namespaces only.
TENANT_SERVICE_ACCOUNT = "flux"
VCLUSTER_RELEASE = "vcluster"  # HelmRelease and Helm release name in every host namespace
HELM_REPOSITORY = "loft"
# A dot makes it a DNS subdomain but never a DNS label, so no project can take this name.
WORKSPACE_KUSTOMIZATION = "hexabase.workspace"
APPS_ENTRYPOINT = "apps-entrypoint"

_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = _ROOT / "templates"
SKELETON_DIR = _ROOT / "gitops-repo-skeleton"

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class RenderError(ValueError):
    """A spec the renderer cannot turn into a valid repository; names the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# --- paths Hexabase owns ------------------------------------------------------------------


TOP_LEVEL_FILES = ("README.md", "hexabase.yaml")


def is_managed(path: PurePosixPath) -> bool:
    """True for a path Hexabase owns (and may rewrite or delete): README.md, hexabase.yaml and
    everything under host/ or workspaces/, except anything under workspaces/*/projects/*/apps/.
    Odd paths (absolute, '..') are never managed."""
    parts = path.parts
    if not parts or path.is_absolute() or any(p in ("", ".", "..") for p in parts):
        return False
    if len(parts) == 1:
        return parts[0] in TOP_LEVEL_FILES
    if parts[0] not in ("host", "workspaces") or len(parts) < 2:
        return False
    is_apps = len(parts) >= 5 and parts[0] == "workspaces" and parts[2] == "projects"
    return not (is_apps and parts[4] == "apps")


# --- the `q` filter and the file pipeline ----------------------------------------------------


def quote(value: Any) -> str:
    """The `q` filter: a value as flow YAML with every string double-quoted and escaped, so no
    value can become YAML syntax (see yamlio.flow)."""
    try:
        return yamlio.flow(value)
    except yamlio.YamlError as exc:
        raise ValueError(str(exc)) from exc


@cache
def _environment(directory: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters["q"] = quote
    return env


def _template(directory: Path, name: str) -> jinja2.Template:
    return _environment(directory).get_template(name)


@dataclass
class _Files:
    """The files rendered so far; a second write to a path is a collision (duplicate names)."""

    files: dict[PurePosixPath, bytes] = field(default_factory=dict)

    def add(self, path: PurePosixPath, data: bytes) -> None:
        if path not in _checked_paths:
            _check_path(path)
        if path in self.files:
            raise RenderError(str(path), "rendered twice: two objects share a name in the spec")
        self.files[path] = data

    def manifest(self, path: str, template: str, **context: Any) -> None:
        self.add(_checked_path(path), _manifest(path, template, context))


def _checked_path(path: str) -> PurePosixPath:
    """A rendered path, checked once: the same paths come back on every render."""
    checked = _checked_paths.get(path)
    if checked is None:
        checked = PurePosixPath(path)
        _check_path(checked)
        if len(_checked_paths) < 100_000:
            _checked_paths[path] = checked
            _checked_paths[checked] = checked
    return checked


# str and PurePosixPath keys of paths that passed _check_path (they hash differently).
_checked_paths: dict[str | PurePosixPath, PurePosixPath] = {}


def _check_path(path: PurePosixPath) -> None:
    text = str(path)
    if path.is_absolute() or any(p in ("", ".", "..") for p in path.parts) or "\\" in text:
        raise RenderError(text, "paths must be relative, normalised and stay inside the repo")
    if str(PurePosixPath(*path.parts)) != text:
        raise RenderError(text, "path is not normalised")


def _manifest(path: str, template: str, context: Mapping[str, Any]) -> bytes:
    """One rendered, parsed, schema-checked and canonically re-emitted file.

    Memoized on (template, context): the worker renders the whole organization for every
    change, and almost every file is the same as last time, so its cost follows the change,
    not the size of the organization. Failures are not cached (they raise)."""
    try:
        key = json.dumps(context, sort_keys=True, separators=(",", ":"))
    except TypeError:  # a context that is not plain data: render without the memo
        return _manifest_uncached(path, template, context)
    cached = _MEMO.get((template, key))
    if cached is None:
        cached = _manifest_uncached(path, template, context)
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))  # drop the oldest entry (dicts keep insertion order)
        _MEMO[(template, key)] = cached
    return cached


_MEMO_SIZE = 20_000
_MEMO: dict[tuple[str, str], bytes] = {}


def _manifest_uncached(path: str, template: str, context: Mapping[str, Any]) -> bytes:
    try:
        text = _template(TEMPLATES_DIR, template).render(**context)
    except ValueError as exc:
        raise RenderError(path, str(exc)) from exc
    try:
        documents = yamlio.load_all(text)
    except yamlio.YamlError as exc:  # a template bug, never user data: values are quoted
        raise RenderError(path, f"template {template} produced invalid YAML: {exc}") from exc
    if not documents:
        raise RenderError(path, f"template {template} produced no document")
    for document in documents:
        try:
            schema.validate(document, source=path)
        except schema.SchemaError as exc:
            raise RenderError(path, exc.problem) from exc
    return (MANAGED_HEADER + yamlio.dump_all(documents)).encode("utf-8")


# --- names --------------------------------------------------------------------------------


def host_namespace(organization: OrganizationSpec, workspace: WorkspaceSpec) -> str:
    return workspace_namespace(organization.name, workspace.name)


def workspace_namespace(organization_name: str, workspace_name: str) -> str:
    # "--" appears in neither name (names.is_tenant_name), so this never collides.
    return f"{organization_name}--{workspace_name}"


def flux_namespace(organization: OrganizationSpec) -> str:
    """`<org>--system`: the organization's GitRepository, Kustomization, SA and Receiver."""
    return workspace_namespace(organization.name, SYSTEM_WORKSPACE)


def reads_nodes(plan: PlanSpec) -> bool:
    """Dedicated-node plans: the vCluster syncs the host's nodes, which needs cluster-wide read
    rights that a tenant may not grant itself; the platform repository binds them instead."""
    return bool(plan.node_selector or plan.tolerations)


def kubeconfig_secret() -> str:
    """The Secret vCluster writes its kubeconfig to (key `config`), in the host namespace."""
    return f"vc-{VCLUSTER_RELEASE}"


def _group_subject(group: str) -> str:
    return f"oidc:{group}"  # the vCluster API server runs with --oidc-groups-prefix=oidc:


def _labels(org: OrganizationSpec, **extra: str) -> dict[str, str]:
    labels = {"app.kubernetes.io/managed-by": "hexabase", "owner": org.name}
    labels.update({f"hexabase.io/{k}": v for k, v in extra.items()})
    return labels


# --- the renderer -------------------------------------------------------------------------


def render(spec: TenantSpec) -> dict[PurePosixPath, bytes]:
    """Every file Hexabase writes for this Organization: the skeleton files and the managed tree."""
    out = _Files()
    for path, data in skeleton_files(spec.organization).items():
        out.add(path, data)
    workspaces = sorted(spec.workspaces, key=lambda w: w.name)
    out.manifest(
        "host/kustomization.yaml",
        "kustomization.yaml.j2",
        resources=[f"workspaces/{w.name}" for w in workspaces],
    )
    for workspace in workspaces:
        _render_host_workspace(out, spec, workspace)
        _render_workspace(out, spec, workspace)
    return out.files


def _render_host_workspace(out: _Files, spec: TenantSpec, workspace: WorkspaceSpec) -> None:
    org = spec.organization
    base = f"host/workspaces/{workspace.name}"
    namespace = host_namespace(org, workspace)
    labels = _labels(org, organization=org.id, workspace=workspace.name)
    plan = workspace.plan
    projects = sorted(p.name for p in workspace.projects)
    out.manifest(
        f"{base}/kustomization.yaml",
        "kustomization.yaml.j2",
        resources=["namespace.yaml", "sync.yaml", "vcluster.yaml"]
        + [f"project-apps/{p}.yaml" for p in projects],
    )
    out.manifest(f"{base}/namespace.yaml", "namespace.yaml.j2", name=namespace, labels=labels)
    service_host = f"{VCLUSTER_RELEASE}.{namespace}.svc"
    limit_range = _limit_range_dict(plan.limit_range)
    out.manifest(
        f"{base}/vcluster.yaml",
        "vcluster.yaml.j2",
        namespace=namespace,
        labels=labels,
        release=VCLUSTER_RELEASE,
        service_account=TENANT_SERVICE_ACCOUNT,
        reads_nodes=reads_nodes(plan),
        helm_repository=HELM_REPOSITORY,
        chart_url=spec.vcluster_chart_repository,
        chart_version=spec.vcluster_chart_version,
        api_server_args=_api_server_args(spec.issuer_url, workspace.id),
        service_host=service_host,
        kubeconfig_server=f"https://{service_host}:443",
        node_selector=dict(sorted(plan.node_selector.items())),
        tolerations=[_toleration_dict(t) for t in plan.tolerations],
        enforce_tolerations=[_toleration_string(t) for t in plan.tolerations],
        quota=_with_chart_defaults_removed(
            {str(k): v for k, v in plan.quota.items()}, _CHART_QUOTA_KEYS
        ),
        limit_range_enabled=any(limit_range.values()),
        limit_range={
            k: _with_chart_defaults_removed(v, _CHART_LIMIT_KEYS.get(k, ()))
            for k, v in limit_range.items()
        },
    )
    out.manifest(
        f"{base}/sync.yaml",
        "sync.yaml.j2",
        namespace=namespace,
        labels=labels,
        workspace_kustomization=WORKSPACE_KUSTOMIZATION,
        workspace_path=f"./workspaces/{workspace.name}",
        git_repository=org.name,
        flux_namespace=flux_namespace(org),
        kubeconfig_secret=kubeconfig_secret(),
    )
    # One file per project, so a new project renders one new file here (and the list in the
    # kustomization.yaml) instead of re-rendering every project's Kustomization.
    for project in projects:
        out.manifest(
            f"{base}/project-apps/{project}.yaml",
            "apps-sync.yaml.j2",
            name=project,
            project=project,
            namespace=namespace,
            labels=_labels(org, workspace=workspace.name, project=project),
            component=f"../projects/{project}/apps",
            apps_entrypoint_path=f"./workspaces/{workspace.name}/{APPS_ENTRYPOINT}",
            workspace_kustomization=WORKSPACE_KUSTOMIZATION,
            git_repository=org.name,
            flux_namespace=flux_namespace(org),
            kubeconfig_secret=kubeconfig_secret(),
        )


# The vCluster chart ships default quota and limit values; Helm merges ours over them, so a key
# the plan does not set would silently keep the chart's value. Setting it to null removes it.
_CHART_QUOTA_KEYS = (
    "requests.cpu", "requests.memory", "requests.storage", "requests.ephemeral-storage",
    "limits.cpu", "limits.memory", "limits.ephemeral-storage", "services.nodeports",
    "services.loadbalancers", "count/endpoints", "count/pods", "count/services",
    "count/secrets", "count/configmaps", "count/persistentvolumeclaims",
)  # fmt: skip
_CHART_LIMIT_KEYS = {
    "default": ("ephemeral-storage", "memory", "cpu"),
    "defaultRequest": ("ephemeral-storage", "memory", "cpu"),
}


def _with_chart_defaults_removed(
    values: Mapping[str, str], chart_keys: Iterable[str]
) -> dict[str, str | None]:
    if not values:
        return {}
    merged: dict[str, str | None] = dict.fromkeys(chart_keys)
    merged.update(values)
    return dict(sorted(merged.items()))


def _api_server_args(issuer_url: str, client_id: str) -> list[str]:
    return [
        f"--oidc-issuer-url={issuer_url}",
        f"--oidc-client-id={client_id}",
        "--oidc-username-claim=email",
        "--oidc-username-prefix=oidc:",
        "--oidc-groups-claim=groups",
        "--oidc-groups-prefix=oidc:",
    ]


def _toleration_dict(t: Toleration) -> dict[str, str]:
    d = {"key": t.key, "operator": t.operator, "effect": t.effect}
    if t.operator == "Equal":
        d["value"] = t.value
    return d


def _toleration_string(t: Toleration) -> str:
    """vCluster's enforceTolerations syntax: key=value:Effect, or key:Effect op=Exists."""
    if t.operator == "Exists":
        return f"{t.key}:{t.effect} op=Exists"
    return f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}"


def _limit_range_dict(lr: LimitRangeSpec) -> dict[str, dict[str, str]]:
    return {
        "default": dict(sorted(lr.default.items())),
        "defaultRequest": dict(sorted(lr.default_request.items())),
        "max": dict(sorted(lr.max.items())),
    }


def _render_workspace(out: _Files, spec: TenantSpec, workspace: WorkspaceSpec) -> None:
    org = spec.organization
    base = f"workspaces/{workspace.name}"
    labels = _labels(org, workspace=workspace.name)
    projects = sorted(workspace.projects, key=lambda p: p.name)
    out.manifest(
        f"{base}/kustomization.yaml",
        "kustomization.yaml.j2",
        resources=["policies", "rbac", *(f"projects/{p.name}" for p in projects)],
    )
    out.manifest(
        f"{base}/{APPS_ENTRYPOINT}/kustomization.yaml", "kustomization.yaml.j2", resources=[]
    )

    out.manifest(f"{base}/rbac/kustomization.yaml", "kustomization.yaml.j2",
                 resources=["clusterrolebindings.yaml", "clusterroles.yaml"])  # fmt: skip
    out.manifest(f"{base}/rbac/clusterroles.yaml", "clusterroles.yaml.j2", labels=labels)
    pairs = {("WSAdmins", "hexabase:workspace-admin")}
    pairs.update((b.group, b.cluster_role) for b in workspace.bindings)
    bindings = [
        {
            "name": f"hexabase:{group}:{role.removeprefix('hexabase:')}",
            "role": role,
            "subject": _group_subject(group),
        }
        for group, role in sorted(pairs)
    ]
    out.manifest(f"{base}/rbac/clusterrolebindings.yaml", "clusterrolebindings.yaml.j2",
                 labels=labels, bindings=bindings)  # fmt: skip

    _render_policies(out, base, labels, workspace.plan)
    for project in projects:
        _render_project(out, spec, workspace, project)


def _render_policies(out: _Files, base: str, labels: dict[str, str], plan: PlanSpec) -> None:
    files = ["disallow-privileged.yaml", "require-owner-label.yaml"]
    out.manifest(f"{base}/policies/require-owner-label.yaml",
                 "policy-require-owner-label.yaml.j2", labels=labels)  # fmt: skip
    out.manifest(f"{base}/policies/disallow-privileged.yaml",
                 "policy-disallow-privileged.yaml.j2", labels=labels)  # fmt: skip
    if plan.allowed_registries:
        registries = sorted(set(plan.allowed_registries))
        for registry in registries:  # they become CEL text: hold the rule here too
            if not names.is_registry(registry):
                raise RenderError(f"{base}/policies", f"{registry!r}: {names.REGISTRY_RULE}")
        out.manifest(
            f"{base}/policies/allowed-registries.yaml",
            "policy-allowed-registries.yaml.j2",
            labels=labels,
            registries_cel=json.dumps(registries),  # a JSON list of strings is a CEL list
            message="Images must come from: " + ", ".join(registries) + ".",
        )
        files.append("allowed-registries.yaml")
    out.manifest(f"{base}/policies/kustomization.yaml", "kustomization.yaml.j2",
                 resources=sorted(files))  # fmt: skip


def _env(env: Iterable[EnvVar]) -> list[dict[str, str]]:
    return [{"name": e.name, "value": e.value} for e in env]  # order kept: $(VAR) refers back


def _render_project(
    out: _Files, spec: TenantSpec, workspace: WorkspaceSpec, project: ProjectSpec
) -> None:
    org = spec.organization
    base = f"workspaces/{workspace.name}/projects/{project.name}"
    ns = project.name
    labels = _labels(org, workspace=workspace.name, project=project.name)
    resources = ["namespace.yaml"]
    out.manifest(f"{base}/namespace.yaml", "namespace.yaml.j2", name=ns, labels=labels)

    if project.quota:
        out.manifest(f"{base}/resourcequota.yaml", "resourcequota.yaml.j2", namespace=ns,
                     labels=labels, hard=dict(sorted(project.quota.items())))  # fmt: skip
        resources.append("resourcequota.yaml")
    limit_range = _limit_range_dict(project.limit_range or workspace.plan.limit_range)
    if any(limit_range.values()):
        lr = {"default": limit_range["default"], "default_request": limit_range["defaultRequest"],
              "max": limit_range["max"]}  # fmt: skip
        out.manifest(f"{base}/limitrange.yaml", "limitrange.yaml.j2", namespace=ns,
                     labels=labels, limit_range=lr)  # fmt: skip
        resources.append("limitrange.yaml")

    role_names = {r.name for r in project.roles}
    for role in sorted(project.roles, key=lambda r: r.name):
        rules = [
            {
                "api_groups": list(r.api_groups),
                "resources": list(r.resources),
                "verbs": list(r.verbs),
            }
            for r in role.rules
        ]
        out.manifest(f"{base}/roles/{role.name}.yaml", "role.yaml.j2", name=role.name,
                     namespace=ns, labels=labels, rules=rules)  # fmt: skip
        resources.append(f"roles/{role.name}.yaml")

    bindings = []
    for b in sorted(set(project.bindings), key=lambda b: (b.group, b.role_kind, b.role)):
        if b.role_kind == "Role" and b.role not in role_names:
            raise RenderError(
                f"{base}/rolebindings.yaml",
                f"group {b.group} is bound to Role {b.role!r}, which project {project.name} "
                "does not define",
            )
        kind = "clusterrole" if b.role_kind == "ClusterRole" else "role"
        bindings.append({
            "name": f"hexabase:{b.group}:{kind}:{b.role.removeprefix('hexabase:')}",
            "role_kind": b.role_kind,
            "role": b.role,
            "subject": _group_subject(b.group),
        })  # fmt: skip
    if bindings:
        out.manifest(f"{base}/rolebindings.yaml", "rolebindings.yaml.j2", namespace=ns,
                     labels=labels, bindings=bindings)  # fmt: skip
        resources.append("rolebindings.yaml")

    for cj in sorted(project.cronjobs, key=lambda c: c.name):
        out.manifest(
            f"{base}/cronjobs/{cj.name}.yaml",
            "cronjob.yaml.j2",
            name=cj.name,
            namespace=ns,
            labels={**labels, "hexabase.io/cronjob": cj.name},
            schedule=cj.schedule,
            suspend=cj.suspend,
            concurrency_policy=cj.concurrency_policy,
            image=cj.image,
            command=list(cj.command),
            args=list(cj.args),
            env=_env(cj.env),
        )
        resources.append(f"cronjobs/{cj.name}.yaml")

    for fn in sorted(project.functions, key=lambda f: f.name):
        path = f"{base}/functions/{fn.name}.yaml"
        if not _DNS1035_LABEL.fullmatch(fn.name):
            raise RenderError(path, "a Function name must start with a letter (Knative Service)")
        if fn.min_scale > fn.max_scale:
            raise RenderError(path, f"min_scale {fn.min_scale} exceeds max_scale {fn.max_scale}")
        out.manifest(
            path,
            "function.yaml.j2",
            name=fn.name,
            namespace=ns,
            labels={**labels, "hexabase.io/function": fn.name},
            image=fn.image,
            env=_env(fn.env),
            port=fn.port,
            min_scale=fn.min_scale,
            max_scale=fn.max_scale,
            concurrency=fn.concurrency,
        )
        resources.append(f"functions/{fn.name}.yaml")

    # apps/ is never listed: the project's apps Kustomization (host sync.yaml) applies it.
    out.manifest(f"{base}/kustomization.yaml", "kustomization.yaml.j2", resources=sorted(resources))


# --- the skeleton -------------------------------------------------------------------------


def skeleton_files(organization: OrganizationSpec) -> dict[PurePosixPath, bytes]:
    """README.md and hexabase.yaml: the files a new tenant repository starts with."""
    context = {
        "organization_id": organization.id,
        "organization_name": organization.name,
        "layout_version": LAYOUT_VERSION,
        "managed_globs": list(MANAGED_GLOBS),
        "unmanaged_globs": list(UNMANAGED_GLOBS),
    }
    readme = _template(SKELETON_DIR, "README.md.j2").render(**context)
    hexabase_yaml = yamlio.dump(
        yamlio.load(_template(SKELETON_DIR, "hexabase.yaml.j2").render(**context))
    )
    return {
        PurePosixPath("README.md"): (
            "<!-- Managed by Hexabase: changes here are overwritten; "
            "change it through the Hexabase API or UI. -->\n" + readme
        ).encode("utf-8"),
        PurePosixPath("hexabase.yaml"): (MANAGED_HEADER + hexabase_yaml).encode("utf-8"),
    }
