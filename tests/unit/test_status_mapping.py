"""Flux status -> workspace, project and change state (reconciler.status), from Flux objects
shaped as the API server returns them.

Covers: revision parsing; Ready/Reconciling/Stalled and observedGeneration; ancestry (a later
revision applies earlier changes, an unrelated one does not); failed attempts and a later
fix; each failure class translated into a sentence with the raw message kept; workspace
states from the HelmRelease and the workspace Kustomization."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import status

A = "a" * 40  # first commit
B = "b" * 40  # a later commit (child of A)
C = "c" * 40  # a commit on another line (not a descendant of A)
HISTORY = {A: {A}, B: {A, B}, C: {C}}  # commit -> the commits it contains


def contains(revision: str, commit: str) -> bool:
    return commit in HISTORY.get(revision, {revision})


def kustomization(
    *,
    ready: str = "True",
    reason: str = "ReconciliationSucceeded",
    message: str = "",
    applied: str | None = A,
    attempted: str | None = None,
    reconciling: bool = False,
    generation: int = 1,
    observed: int = 1,
    time: str = "2026-12-04T10:00:00Z",
) -> dict[str, Any]:
    conditions = [
        {
            "type": "Ready",
            "status": ready,
            "reason": reason,
            "message": message or f"Applied revision: main@sha1:{applied}",
            "lastTransitionTime": time,
        }
    ]
    if reconciling:
        conditions.append(
            {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": ""}
        )
    obj: dict[str, Any] = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {
            "name": "hexabase.workspace",
            "namespace": "acme--dev",
            "generation": generation,
        },
        "status": {"observedGeneration": observed, "conditions": conditions},
    }
    if applied:
        obj["status"]["lastAppliedRevision"] = f"main@sha1:{applied}"
    obj["status"]["lastAttemptedRevision"] = f"main@sha1:{attempted or applied}"
    return obj


def helm_release(
    *, ready: str, reason: str, message: str = "", deployed: bool = False
) -> dict[str, Any]:
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "vcluster", "namespace": "acme--dev", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": "2026-12-04T10:00:00Z",
                }
            ],
            "history": [{"status": "deployed"}] if deployed else [],
        },
    }


def test_revision_sha_reads_flux_revisions() -> None:
    assert status.revision_sha(f"main@sha1:{A}") == A
    assert status.revision_sha(f"sha1:{A}") == A
    assert status.revision_sha(A) == A
    assert status.revision_sha("main/" + A) is None
    assert status.revision_sha(None) is None


def test_change_is_applied_when_a_later_revision_carrying_it_is_ready() -> None:
    assert status.change_outcome(A, [kustomization(applied=B)], contains)[0] == "applied"  # type: ignore[index]
    assert status.change_outcome(A, [kustomization(applied=A)], contains)[0] == "applied"  # type: ignore[index]
    # A revision that does not contain the commit (string equality would be wrong either way).
    assert status.change_outcome(B, [kustomization(applied=A)], contains) is None
    assert status.change_outcome(A, [kustomization(applied=C)], contains) is None


def test_change_needs_every_kustomization_that_carries_it() -> None:
    host, inside = (
        kustomization(applied=B),
        kustomization(applied=A, ready="Unknown", reason="Progressing", reconciling=True),
    )
    assert status.change_outcome(B, [host, inside], contains) is None
    assert status.change_outcome(A, [host, kustomization(applied=A)], contains)[0] == "applied"  # type: ignore[index]


def test_stale_status_of_an_older_generation_decides_nothing() -> None:
    assert status.change_outcome(A, [kustomization(generation=2, observed=1)], contains) is None


def test_failed_attempt_at_a_revision_carrying_the_change_fails_it_and_a_fix_applies_it() -> None:
    broken = kustomization(
        ready="False",
        reason="ReconciliationFailed",
        applied=A,
        attempted=B,
        message=(
            'ResourceQuota/web/quota dry-run failed (Invalid): ResourceQuota "quota" is invalid: '
            'spec.hard[requests.cpu]: Invalid value: "-1": must be greater than or equal to 0'
        ),
        time="2026-12-04T10:05:00Z",
    )
    outcome = status.change_outcome(B, [broken], contains)
    assert outcome is not None and outcome[0] == "failed"
    failure = outcome[1]
    assert failure is not None and failure.kind == "schema"
    assert "ResourceQuota/web" in failure.sentence and "spec.hard" in failure.raw
    assert outcome[2] == "2026-12-04T10:05:00Z"
    # The earlier change A was applied before and stays applied: the failure is not its.
    assert status.change_outcome(A, [broken], contains)[0] == "applied"  # type: ignore[index]
    # A fix on top of B: B's content is now live too.
    HISTORY["d" * 40] = {A, B, "d" * 40}
    fixed = kustomization(applied="d" * 40)
    assert status.change_outcome(B, [fixed], contains)[0] == "applied"  # type: ignore[index]


def test_a_failure_flux_will_retry_is_still_a_failure() -> None:
    retrying = kustomization(
        ready="False",
        reason="ReconciliationFailed",
        message="LimitRange/cells/hexabase is invalid: spec.limits[0].default[cpu]: Invalid value",
        applied=A,
        attempted=B,
    )
    retrying["status"]["conditions"].append(
        {"type": "Reconciling", "status": "True", "reason": "ProgressingWithRetry", "message": ""}
    )
    outcome = status.change_outcome(B, [retrying], contains)
    assert outcome is not None and outcome[0] == "failed"


def test_reconciling_is_not_a_failure() -> None:
    progressing = kustomization(ready="False", reason="Progressing", attempted=B, reconciling=True)
    assert status.object_state(progressing).ready is None
    assert status.change_outcome(B, [progressing], contains) is None


@pytest.mark.parametrize(
    ("kind", "reason", "message", "expected", "words"),
    [
        (
            "Kustomization",
            "ReconciliationFailed",
            'ResourceQuota/web/quota dry-run failed (Invalid): ResourceQuota "quota" is '
            "invalid: spec.hard[pods]: Invalid value",
            "schema",
            "refused ResourceQuota/web",
        ),
        (
            "Kustomization",
            "ReconciliationFailed",
            'Deployment/web/api dry-run failed: pods "api" is forbidden: exceeded quota: '
            "quota, requested: requests.cpu=2",
            "quota",
            "ResourceQuota",
        ),
        (
            "Kustomization",
            "ReconciliationFailed",
            'Service/web/hello dry-run failed: no matches for kind "Service" in version '
            '"serving.knative.dev/v1"',
            "missing-crd",
            "Service (serving.knative.dev/v1)",
        ),
        (
            "HelmRelease",
            "InstallFailed",
            "Helm install failed for release acme--dev/vcluster with chart vcluster@0.36.1: "
            "context deadline exceeded",
            "chart",
            "vCluster chart",
        ),
        (
            "GitRepository",
            "GitOperationFailed",
            "failed to checkout and determine revision: unable to clone "
            "'http://127.0.0.1:1/x.git': repository not found",
            "git-fetch",
            "fetch the tenant repository",
        ),
        (
            "Kustomization",
            "DependencyNotReady",
            "dependency 'acme--dev/hexabase.workspace' is not ready",
            "dependency",
            "Waiting",
        ),
        ("Kustomization", "ReconciliationFailed", "something odd", "other", "something odd"),
    ],
)
def test_each_failure_class_becomes_one_sentence_with_the_raw_message_kept(
    kind: str, reason: str, message: str, expected: str, words: str
) -> None:
    failure = status.explain(kind, reason, message)
    assert failure.kind == expected
    assert words in failure.sentence
    assert message in failure.raw and reason in failure.raw
    assert failure.sentence.endswith(".") or expected == "other"


def test_workspace_states() -> None:
    ok_release = helm_release(ready="True", reason="InstallSucceeded", deployed=True)
    assert status.workspace_state(None, None, deleting=False)[0] == "provisioning"
    assert status.workspace_state(ok_release, None, deleting=False)[0] == "provisioning"
    assert status.workspace_state(ok_release, kustomization(), deleting=False)[0] == "ready"
    broken_sync = kustomization(
        ready="False", reason="ReconciliationFailed", message="x is invalid"
    )
    state, failure = status.workspace_state(ok_release, broken_sync, deleting=False)
    assert state == "degraded" and failure is not None and failure.kind == "schema"
    never = helm_release(ready="False", reason="InstallFailed", message="Helm install failed")
    state, failure = status.workspace_state(never, None, deleting=False)
    assert state == "failed" and failure is not None and failure.kind == "chart"
    upgrade = helm_release(
        ready="False", reason="UpgradeFailed", message="Helm upgrade failed", deployed=True
    )
    assert status.workspace_state(upgrade, kustomization(), deleting=False)[0] == "degraded"
    assert status.workspace_state(ok_release, kustomization(), deleting=True)[0] == "deleting"


def test_project_states() -> None:
    assert status.project_state(None, None)[0] == "provisioning"
    assert status.project_state(kustomization(), None)[0] == "ready"
    apps_broken = kustomization(
        ready="False",
        reason="ReconciliationFailed",
        message='no matches for kind "Foo" in version "x/v1"',
    )
    state, failure = status.project_state(kustomization(), apps_broken)
    assert state == "degraded" and failure is not None and failure.kind == "missing-crd"
