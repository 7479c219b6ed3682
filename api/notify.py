"""Tell Flux's notification-controller that a repository moved, so it fetches at once.

After each commit the worker POSTs a GitHub-style push event to the organization's Receiver
(type `github`), signed as GitHub signs webhooks. The webhook path and the signature are
computed exactly as Flux checks them (notification-controller api/v1 `Receiver.GetWebhookPath`,
go-github `ValidatePayload`). Best effort: a short timeout, failures are logged with the change
ids and never fail a change; the GitRepository's polling interval is the fallback.

The pure pieces (path, body, signature, headers) are separate from the one function that does
HTTP, so they are unit-tested against vectors taken from Flux's own code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from reconciler.platform import ReceiverRef

log = logging.getLogger("hexabase.notify")

WEBHOOK_PATH_PREFIX = "/hook/"  # notification-controller apiv1.ReceiverWebhookPath


def webhook_path(token: str, receiver: ReceiverRef) -> str:
    """`/hook/<sha256hex(token + name + namespace)>`, as Receiver.GetWebhookPath computes it."""
    digest = hashlib.sha256((token + receiver.name + receiver.namespace).encode("utf-8"))
    return WEBHOOK_PATH_PREFIX + digest.hexdigest()


def push_event_body(*, repository: str, revision: str, branch: str = "main") -> bytes:
    """A minimal GitHub push event; Flux's github receiver reads only the signature and the
    event header, the fields are for people reading logs. Canonical JSON: same input, same
    bytes, same signature."""
    event = {
        "after": revision,
        "ref": f"refs/heads/{branch}",
        "repository": {"full_name": f"hexabase/{repository}", "name": repository},
    }
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode("utf-8")


def signature(token: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value: `sha256=<hex HMAC-SHA256(key=token, body)>`."""
    return "sha256=" + hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def push_headers(token: str, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": signature(token, body),
    }


class Notifier(Protocol):
    """What the worker calls after a commit. Never raises."""

    def repository_moved(
        self, receiver: ReceiverRef, *, repository: str, revision: str, change_ids: Sequence[int]
    ) -> bool: ...


@dataclass
class HttpNotifier:
    """Posts push events to `<base_url><webhook path>` with httpx (a transport may be given:
    httpx.MockTransport in tests of callers that need no real receiver)."""

    base_url: str
    token: str
    timeout: float = 2.0
    transport: httpx.BaseTransport | None = None

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=self.timeout, transport=self.transport)

    def repository_moved(
        self, receiver: ReceiverRef, *, repository: str, revision: str, change_ids: Sequence[int]
    ) -> bool:
        """True when the receiver accepted the event; False (logged) otherwise."""
        url = self.base_url.rstrip("/") + webhook_path(self.token, receiver)
        body = push_event_body(repository=repository, revision=revision)
        changes = ", ".join(str(c) for c in change_ids) or "none"
        try:
            response = self._client.post(url, content=body, headers=push_headers(self.token, body))
        except httpx.HTTPError as exc:
            log.warning(
                "change(s) %s: could not notify Receiver %s/%s of %s at %s (%s); Flux will "
                "find the commit when it next polls",
                changes, receiver.namespace, receiver.name, revision[:12], url, exc,
            )  # fmt: skip
            return False
        if response.is_success:
            return True
        log.warning(
            "change(s) %s: Receiver %s/%s answered %d to the push event for %s; Flux will find "
            "the commit when it next polls",
            changes, receiver.namespace, receiver.name, response.status_code, revision[:12],
        )  # fmt: skip
        return False

    def close(self) -> None:
        self._client.close()
