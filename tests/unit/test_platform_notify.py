"""Receiver notifications, computed exactly as Flux checks them.

The vectors come from running Flux's own code (Go, notification-controller api v1.9.2
`Receiver.GetWebhookPath` and go-github v64 `ValidateSignature`, the library the controller's
github receiver uses) on the same inputs:

    r := apiv1.Receiver{ObjectMeta: metav1.ObjectMeta{Name: "acme", Namespace: "acme--system"}}
    r.GetWebhookPath("test-token")      // /hook/1b72...b38c
    mac := hmac.New(sha256.New, []byte("test-token")); mac.Write(body)
    github.ValidateSignature("sha256="+hex(mac), body, []byte("test-token")) // nil

Also covers: the HTTP adapter posts to base URL + path with the GitHub headers, and a refused
or unreachable receiver is reported as False (and logged with the change ids), never raised.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import httpx
import pytest

from api.notify import HttpNotifier, push_event_body, push_headers, signature, webhook_path
from reconciler.platform import ReceiverRef, tenant_receiver

TOKEN = "test-token"
REVISION = "0123456789abcdef0123456789abcdef01234567"
# Flux's GetWebhookPath("test-token") for Receiver acme in acme--system.
FLUX_PATH = "/hook/1b723b407ed11c80f793a837704217a2481fb28c9342fb6bfc7bd1bbac18b38c"
FLUX_BODY = (
    b'{"after":"0123456789abcdef0123456789abcdef01234567","ref":"refs/heads/main",'
    b'"repository":{"full_name":"hexabase/org-1","name":"org-1"}}'
)
# The signature go-github's ValidateSignature accepted for FLUX_BODY and TOKEN.
FLUX_SIGNATURE = "sha256=4d27c04c1289167baf4afa21b444f0fa4c4383a51f9d0bf3a892da3cccfdb78b"


def test_webhook_path_is_the_one_flux_computes() -> None:
    receiver = tenant_receiver("acme")
    assert receiver == ReceiverRef(name="acme", namespace="acme--system")
    assert webhook_path(TOKEN, receiver) == FLUX_PATH


def test_webhook_path_depends_on_token_name_and_namespace() -> None:
    paths = {
        webhook_path(TOKEN, ReceiverRef("acme", "acme--system")),
        webhook_path("other-token", ReceiverRef("acme", "acme--system")),
        webhook_path(TOKEN, ReceiverRef("globex", "globex--system")),
    }
    assert len(paths) == 3


def test_push_event_body_is_canonical() -> None:
    body = push_event_body(repository="org-1", revision=REVISION)
    assert body == FLUX_BODY
    assert body == push_event_body(repository="org-1", revision=REVISION)


def test_signature_is_the_one_github_sends_and_flux_accepts() -> None:
    assert signature(TOKEN, FLUX_BODY) == FLUX_SIGNATURE
    expected = hmac.new(TOKEN.encode(), FLUX_BODY, hashlib.sha256).hexdigest()
    assert f"sha256={expected}" == FLUX_SIGNATURE
    assert push_headers(TOKEN, FLUX_BODY) == {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": FLUX_SIGNATURE,
    }


def test_notifier_posts_a_signed_push_event_to_the_receiver_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    notifier = HttpNotifier(
        "http://receiver.test:9292/", TOKEN, transport=httpx.MockTransport(handler)
    )
    ok = notifier.repository_moved(
        tenant_receiver("acme"), repository="org-1", revision=REVISION, change_ids=[7]
    )
    assert ok
    (request,) = seen
    assert str(request.url) == "http://receiver.test:9292" + FLUX_PATH
    assert request.method == "POST"
    assert request.content == FLUX_BODY
    assert request.headers["X-Hub-Signature-256"] == FLUX_SIGNATURE
    assert request.headers["X-GitHub-Event"] == "push"
    assert request.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("failure", ["refused", "unreachable"])
def test_failed_notification_is_logged_with_change_ids_never_raised(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if failure == "unreachable":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(401)

    notifier = HttpNotifier("http://receiver.test", TOKEN, transport=httpx.MockTransport(handler))
    with caplog.at_level(logging.WARNING, logger="hexabase.notify"):
        ok = notifier.repository_moved(
            tenant_receiver("acme"), repository="org-1", revision=REVISION, change_ids=[41, 42]
        )
    assert not ok
    assert "change(s) 41, 42" in caplog.text
    assert "acme--system/acme" in caplog.text
