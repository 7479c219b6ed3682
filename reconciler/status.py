"""Flux status -> Hexabase state: pure functions over Flux objects as the API server returns
them (dicts), for the status watcher.

Conditions are read the way Flux writes them: `Ready` (True/False/Unknown), `Reconciling`,
`Stalled`; revisions as `<branch>@sha1:<sha>`. Whether a change is applied is decided by
ancestry, not string equality: a later commit carries every earlier change, so the caller
passes `contains(revision_sha, commit_sha)` (the Git store answers it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

FluxObject = Mapping[str, Any]
WorkspaceState = Literal["provisioning", "ready", "degraded", "deleting", "failed"]
ProjectState = Literal["provisioning", "ready", "degraded"]
ChangeOutcome = Literal["applied", "failed"]
FailureClass = Literal[
    "schema", "quota", "missing-crd", "chart", "git-fetch", "dependency", "other"
]

_SHA = re.compile(r"(?:^|[@:])([0-9a-f]{40}|[0-9a-f]{64})$")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    last_transition_time: str


@dataclass(frozen=True)
class Failure:
    """What went wrong, in one sentence a person can act on, with Flux's own words kept."""

    kind: FailureClass
    sentence: str
    raw: str


@dataclass(frozen=True)
class ObjectState:
    """One Flux object's status, reduced to what the mapping needs."""

    kind: str
    namespace: str
    name: str
    ready: bool | None  # None: still reconciling, or not reported yet
    failure: Failure | None
    applied_sha: str | None  # lastAppliedRevision (Kustomization), artifact (GitRepository)
    attempted_sha: str | None  # lastAttemptedRevision
    transition_time: str  # of the Ready condition, "" when absent
    current: bool  # status describes the latest spec (observedGeneration caught up)


def conditions(obj: FluxObject) -> dict[str, Condition]:
    found: dict[str, Condition] = {}
    for c in (obj.get("status") or {}).get("conditions") or ():
        found[str(c.get("type", ""))] = Condition(
            type=str(c.get("type", "")),
            status=str(c.get("status", "Unknown")),
            reason=str(c.get("reason", "")),
            message=str(c.get("message", "")),
            last_transition_time=str(c.get("lastTransitionTime", "")),
        )
    return found


def revision_sha(revision: str | None) -> str | None:
    """The commit of a Flux revision: 'main@sha1:<sha>', 'sha1:<sha>' or a bare sha."""
    if not revision:
        return None
    match = _SHA.search(revision.strip())
    return match.group(1) if match else None


def _is_current(obj: FluxObject) -> bool:
    """Flux has looked at the latest spec (observedGeneration caught up)."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    return generation is None or observed is None or int(observed) >= int(generation)


def object_state(obj: FluxObject) -> ObjectState:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    kind = str(obj.get("kind", ""))
    conds = conditions(obj)
    ready_cond = conds.get("Ready")
    reconciling = conds.get("Reconciling")
    stalled = conds.get("Stalled")
    ready: bool | None = None
    failure: Failure | None = None
    if ready_cond is not None and _is_current(obj):
        if ready_cond.status == "True":
            ready = True
        elif ready_cond.status == "False" and (
            reconciling is None
            or reconciling.status != "True"
            # Flux keeps Reconciling=True while it waits to retry a failed attempt.
            or reconciling.reason == "ProgressingWithRetry"
            or (stalled is not None and stalled.status == "True")
        ):
            ready = False
            failure = explain(kind, ready_cond.reason, ready_cond.message)
    applied = status.get("lastAppliedRevision")
    if applied is None and kind == "GitRepository":
        applied = (status.get("artifact") or {}).get("revision")
    return ObjectState(
        kind=kind,
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        ready=ready,
        failure=failure,
        applied_sha=revision_sha(applied),
        attempted_sha=revision_sha(status.get("lastAttemptedRevision")),
        transition_time=ready_cond.last_transition_time if ready_cond else "",
        current=_is_current(obj),
    )


# -- failures a person can act on ---------------------------------------------------------

_OBJECT = re.compile(r"(?P<kind>[A-Z][A-Za-z]+)/(?P<name>[a-z0-9.:-]+)(?: (?P<ns>[a-z0-9-]+))?")


def _first_object(message: str) -> str:
    match = _OBJECT.search(message)
    return f"{match.group('kind')}/{match.group('name')}" if match else "a manifest"


def explain(kind: str, reason: str, message: str) -> Failure:
    """Translate a Flux failure into one sentence; the raw message is kept beside it."""
    text = message.lower()
    raw = f"{reason}: {message}" if reason else message
    if kind == "GitRepository" or "failed to checkout" in text or "authentication required" in text:
        return Failure(
            "git-fetch",
            "Flux could not fetch the tenant repository; check that the repository URL is "
            "reachable from the cluster and that its credentials are valid.",
            raw,
        )
    if "exceeded quota" in text or "forbidden: exceeded" in text:
        return Failure(
            "quota",
            f"{_first_object(message)} does not fit the project's ResourceQuota; raise the "
            "quota of the project or lower what the workload requests.",
            raw,
        )
    if (
        "no matches for kind" in text
        or "could not find the requested resource" in text
        or ("not found" in text and "crd" in text)
    ):
        found = re.search(r'no matches for kind "([^"]+)" in version "([^"]+)"', message)
        what = f"{found.group(1)} ({found.group(2)})" if found else "a kind in the manifests"
        return Failure(
            "missing-crd",
            f"The cluster does not know {what}: install the add-on that provides its CRD "
            "(for example Knative Serving or Kyverno) or remove the manifest.",
            raw,
        )
    if kind == "HelmRelease" or reason in ("InstallFailed", "UpgradeFailed", "ChartPullFailed"):
        return Failure(
            "chart",
            "The workspace's vCluster chart failed to install or upgrade; the workspace stays "
            "unavailable until the release succeeds. See the raw message for Helm's error.",
            raw,
        )
    if reason == "DependencyNotReady":
        return Failure(
            "dependency",
            "Waiting for the workspace to be ready before its projects can be applied.",
            raw,
        )
    if (
        " is invalid" in text
        or "strict decoding error" in text
        or "unknown field" in text
        or "admission webhook" in text
        or "denied the request" in text
        or reason in ("ValidationFailed", "BuildFailed")
    ):
        return Failure(
            "schema",
            f"The cluster refused {_first_object(message)}: a value in it is not allowed. "
            "Fix it in the repository or through the API and commit again.",
            raw,
        )
    return Failure("other", f"Flux could not apply the manifests: {message or reason}", raw)


# -- the mapping --------------------------------------------------------------------------


def workspace_state(
    helm_release: FluxObject | None, workspace_sync: FluxObject | None, *, deleting: bool
) -> tuple[WorkspaceState, Failure | None]:
    """A workspace from its vCluster HelmRelease and the Kustomization that applies its
    directory inside the vCluster."""
    if deleting:
        return "deleting", None
    if helm_release is None:
        return "provisioning", None
    release = object_state(helm_release)
    if release.ready is False:
        history = (helm_release.get("status") or {}).get("history") or ()
        was_deployed = any(h.get("status") == "deployed" for h in history if isinstance(h, dict))
        return ("degraded" if was_deployed else "failed"), release.failure
    if release.ready is None or workspace_sync is None:
        return "provisioning", None
    sync = object_state(workspace_sync)
    if sync.ready is True:
        return "ready", None
    if sync.ready is False:
        return "degraded", sync.failure
    return "provisioning", None


def project_state(
    workspace_sync: FluxObject | None, project_apps: FluxObject | None
) -> tuple[ProjectState, Failure | None]:
    """A project is applied by its workspace's Kustomization; its engineers' apps/ by its own."""
    if workspace_sync is None:
        return "provisioning", None
    sync = object_state(workspace_sync)
    if sync.ready is False:
        return "degraded", sync.failure
    if sync.ready is None:
        return "provisioning", None
    if project_apps is not None and object_state(project_apps).ready is False:
        return "degraded", object_state(project_apps).failure
    return "ready", None


def change_outcome(
    commit_sha: str,
    kustomizations: Sequence[FluxObject],
    contains: Callable[[str, str], bool],
) -> tuple[ChangeOutcome, Failure | None, str] | None:
    """Applied when every Kustomization that carries the change has applied a revision that
    contains its commit; failed when one attempted such a revision and failed. None
    while it is still on its way. Returns the outcome, the failure, and the Ready condition's
    transition time (when Flux decided)."""
    if not kustomizations:
        return None
    states = [object_state(k) for k in kustomizations]
    if not all(s.current for s in states):
        return None  # Flux has not looked at the latest spec yet: decide nothing
    for state in states:
        if (
            state.ready is False
            and state.attempted_sha is not None
            and contains(state.attempted_sha, commit_sha)
            and not (state.applied_sha and contains(state.applied_sha, commit_sha))
        ):
            return "failed", state.failure, state.transition_time
    # lastAppliedRevision moves only on a successful apply, so it is the revision Flux
    # reported Ready, even if a later attempt has failed since.
    if all(s.applied_sha is not None and contains(s.applied_sha, commit_sha) for s in states):
        return "applied", None, max(s.transition_time for s in states)
    return None


def failures(objects: Iterable[FluxObject]) -> list[tuple[ObjectState, Failure]]:
    out = []
    for obj in objects:
        state = object_state(obj)
        if state.failure is not None:
            out.append((state, state.failure))
    return out
