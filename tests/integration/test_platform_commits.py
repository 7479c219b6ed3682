"""The platform repository and Receiver notifications, on real PostgreSQL, NATS, Git and HTTP.

Covers: creating an organization and a workspace through the API commits
`tenants/<org>.yaml` to the platform repository (its Flux namespace, source pointing at the
tenant repository, and the workspace namespaces), with the same author and trailers as the
tenant commit, and deleting the workspace removes its namespace; a real HTTP receiver (a tiny
http.server in this test, checking the HMAC as Flux does) gets a correctly signed push event
for the new head after each tenant commit; a receiver that refuses never fails a change; the
workspace name `system` answers 422 naming the field and the rule, and writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.db import models as m
from api.db import status
from api.localstack import Stack, running_stack
from api.settings import Settings
from reconciler import yamlio
from reconciler.platform import PLATFORM_REPO_ID

TOKEN = "receiver-token-for-tests-0123456789"
GIT_BASE_URL = "http://git.hexabase.test/repos"
ORG = "acme"
WS = "dev"


@dataclass
class Receiver:
    """A stand-in for notification-controller's webhook receiver: it checks the path and the
    signature the way Flux does, and records what it got."""

    server: ThreadingHTTPServer
    events: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.events)


def expected_path(org_name: str) -> str:
    # Flux: "/hook/" + hex(sha256(token + receiver name + receiver namespace)).
    digest = hashlib.sha256(f"{TOKEN}{org_name}{org_name}--system".encode()).hexdigest()
    return f"/hook/{digest}"


def platform_path() -> str:
    digest = hashlib.sha256(f"{TOKEN}platformflux-system".encode()).hexdigest()
    return f"/hook/{digest}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            mac = hmac.new(TOKEN.encode(), body, hashlib.sha256).hexdigest()
            valid = hmac.compare_digest(
                self.headers.get("X-Hub-Signature-256", ""), f"sha256={mac}"
            )
            state[0].events.append({
                "path": self.path,
                "valid": valid,
                "event": self.headers.get("X-GitHub-Event"),
                "content_type": self.headers.get("Content-Type"),
                "body": json.loads(body),
            })  # fmt: skip
            self.send_response(state[0].status if valid else 401)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state[0]
    server.shutdown()
    server.server_close()


@pytest.fixture
def platform_stack(
    settings: Settings, settings_env: dict[str, str], receiver: Receiver
) -> Iterator[Stack]:
    extra = {
        "HEXABASE_ACK_WAIT": "2",
        "HEXABASE_GIT_BASE_URL": GIT_BASE_URL,
        "HEXABASE_RECEIVER_BASE_URL": receiver.url,
        "HEXABASE_RECEIVER_TOKEN": TOKEN,
    }
    updated = settings.model_copy(
        update={
            "ack_wait": 2.0,
            "git_base_url": GIT_BASE_URL,
            "receiver_base_url": receiver.url,
            "receiver_token": TOKEN,
        }
    )
    with running_stack(updated, {**settings_env, **extra}) as running:
        yield running


def settle(stack: Stack, client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    change = stack.wait_change(client, response.json()["change"])
    assert change["state"] == "committed", change
    return change


def tenant_documents(stack: Stack, org_name: str) -> list[dict[str, Any]]:
    data = stack.store.read_file("platform", f"tenants/{org_name}.yaml")
    assert data is not None
    return yamlio.load_all(data.decode())


def test_creating_organization_and_workspace_commits_the_platform_repo(
    platform_stack: Stack,
) -> None:
    stack = platform_stack
    with stack.client(stack.token("alice@example.com", "Alice Smith")) as client:
        org_change = settle(stack, client, client.post("/api/v1/organizations", json={"name": ORG}))
        org = client.get(f"/api/v1/organizations/{ORG}").json()
        documents = tenant_documents(stack, ORG)
        source = next(d for d in documents if d["kind"] == "GitRepository")
        assert source["metadata"] == {
            **source["metadata"],
            "name": ORG,
            "namespace": "acme--system",
        }
        assert source["spec"]["url"] == f"{GIT_BASE_URL}/{org['id']}.git"
        assert [d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"] == [
            "acme--system"
        ]
        head = stack.store.log("platform", limit=1)[0]
        assert head.author.email == "alice@example.com"
        assert [t.change_id for t in head.changes] == [str(org_change["id"])]
        root = stack.store.read_file("platform", "kustomization.yaml")
        assert root is not None and b"tenants/acme.yaml" in root

        ws_change = settle(
            stack,
            client,
            client.post(
                f"/api/v1/organizations/{ORG}/workspaces", json={"name": WS, "plan": "standard"}
            ),
        )
        namespaces = [d["metadata"]["name"] for d in tenant_documents(stack, ORG)
                      if d["kind"] == "Namespace"]  # fmt: skip
        assert namespaces == ["acme--system", "acme--dev"]
        head = stack.store.log("platform", limit=1)[0]
        assert [t.change_id for t in head.changes] == [str(ws_change["id"])]

        # A project changes no namespace list: the platform repository does not move.
        commits = len(stack.store.log("platform", limit=100))
        settle(stack, client, client.post(
            f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects", json={"name": "web"}
        ))  # fmt: skip
        assert len(stack.store.log("platform", limit=100)) == commits

        workspace_id = client.get(f"/api/v1/organizations/{ORG}/workspaces/{WS}").json()["id"]
        settle(stack, client, client.delete(f"/api/v1/organizations/{ORG}/workspaces/{WS}"))
        # The namespace (and the SA helm-controller uninstalls as) stays while the vCluster is
        # removed; it goes once the status watcher has seen Flux finish.
        namespaces = [d["metadata"]["name"] for d in tenant_documents(stack, ORG)
                      if d["kind"] == "Namespace"]  # fmt: skip
        assert namespaces == ["acme--system", "acme--dev"]
        org_id = client.get(f"/api/v1/organizations/{ORG}").json()["id"]
        written = status.record(
            stack.sessions, [status.Transition(org_id, "workspace", workspace_id, "deleted")]
        )
        assert len(written) == 1  # as the watcher records it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            namespaces = [d["metadata"]["name"] for d in tenant_documents(stack, ORG)
                          if d["kind"] == "Namespace"]  # fmt: skip
            if namespaces == ["acme--system"]:
                break
            time.sleep(0.2)
        assert namespaces == ["acme--system"]
        assert stack.store.log("platform", limit=1)[0].subject.startswith("workspace.purge")


def test_receiver_gets_a_signed_push_event_after_each_tenant_commit(
    platform_stack: Stack, receiver: Receiver
) -> None:
    stack = platform_stack
    with stack.client(stack.token("bob@example.com")) as client:
        changes = [settle(stack, client, client.post("/api/v1/organizations", json={"name": ORG}))]
        org = client.get(f"/api/v1/organizations/{ORG}").json()
        changes.append(settle(stack, client, client.post(
            f"/api/v1/organizations/{ORG}/workspaces", json={"name": WS, "plan": "standard"}
        )))  # fmt: skip
        changes.append(settle(stack, client, client.post(
            f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects", json={"name": "web"}
        )))  # fmt: skip
    # Organization and workspace creation also move the platform repository: its Receiver is
    # told too (two events), after the tenant's own.
    everything = receiver.wait_for(len(changes) + 2)
    events = [e for e in everything if e["path"] == expected_path(ORG)]
    platform = [e for e in everything if e["path"] != expected_path(ORG)]
    assert len(events) == len(changes), everything
    platform_head = stack.store.head(PLATFORM_REPO_ID)
    assert [e["body"]["repository"]["name"] for e in platform] == [PLATFORM_REPO_ID] * 2
    assert platform[-1]["body"]["after"] == platform_head
    assert all(e["valid"] and e["path"] == platform_path() for e in platform), platform
    for event, change in zip(events, changes, strict=True):
        assert event["valid"], event
        assert event["path"] == expected_path(ORG)
        assert event["event"] == "push" and event["content_type"] == "application/json"
        assert event["body"]["ref"] == "refs/heads/main"
        assert event["body"]["after"] == change["commit_sha"]
        assert event["body"]["repository"]["name"] == org["id"]
    assert events[-1]["body"]["after"] == stack.store.head(org["id"])


def test_refused_notification_never_fails_the_change(
    platform_stack: Stack, receiver: Receiver
) -> None:
    receiver.status = 500
    stack = platform_stack
    with stack.client(stack.token("carol@example.com")) as client:
        change = settle(stack, client, client.post("/api/v1/organizations", json={"name": ORG}))
    assert change["commit_sha"]
    assert receiver.wait_for(1)[0]["valid"]


def test_workspace_named_system_answers_422_and_writes_nothing(platform_stack: Stack) -> None:
    stack = platform_stack
    with stack.client(stack.token("dave@example.com")) as client:
        settle(stack, client, client.post("/api/v1/organizations", json={"name": ORG}))
        org = client.get(f"/api/v1/organizations/{ORG}").json()
        heads = (stack.store.head(org["id"]), stack.store.head("platform"))
        with stack.sessions() as s:
            before = (
                s.scalar(select(func.count()).select_from(m.Change)),
                s.scalar(select(func.count()).select_from(m.Workspace)),
            )
        r = client.post(
            f"/api/v1/organizations/{ORG}/workspaces", json={"name": "system", "plan": "standard"}
        )
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert any(d["loc"][-1] == "name" and "'system' is reserved" in d["msg"] for d in detail)
        time.sleep(0.5)
        with stack.sessions() as s:
            after = (
                s.scalar(select(func.count()).select_from(m.Change)),
                s.scalar(select(func.count()).select_from(m.Workspace)),
            )
        assert after == before
        assert (stack.store.head(org["id"]), stack.store.head("platform")) == heads
