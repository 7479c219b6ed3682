"""From an HTTP request to a Git commit, on real PostgreSQL, NATS JetStream and Git.

Covers: an API call becomes a commit with the expected files, author, committer and
trailers; a redelivered change makes no second commit; two workers racing on one
organization lose no update and commit every change exactly once; a worker killed between
the Git commit and the database update leaves the change committed exactly once.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.db import models as m
from api.localstack import Stack

ORG = "acme"
WS = "dev"


def create_org_ws(client: httpx.Client, stack: Stack, *, plan: str = "standard") -> dict[str, Any]:
    r = client.post("/api/v1/organizations", json={"name": ORG, "display_name": "Acme"})
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/organizations/{ORG}/workspaces", json={"name": WS, "plan": plan})
    assert r.status_code == 201, r.text
    change = stack.wait_change(client, r.json()["change"])
    assert change["state"] == "committed", change
    org: dict[str, Any] = client.get(f"/api/v1/organizations/{ORG}").json()
    return org


def carried_by(stack: Stack, org_id: str) -> dict[str, list[str]]:
    """change id -> the commits whose trailers name it."""
    seen: dict[str, list[str]] = {}
    for record in stack.store.log(org_id, limit=1000):
        for trailer in record.changes:
            seen.setdefault(trailer.change_id, []).append(record.sha)
    return seen


def test_api_call_becomes_commit_with_files_author_and_trailers(stack: Stack) -> None:
    with stack.client(stack.token("alice@example.com", "Alice Smith")) as client:
        org = create_org_ws(client, stack)
        r = client.post(
            f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects",
            json={"name": "web", "quota": {"requests.cpu": "2", "limits.memory": "4Gi"}},
            headers={"x-request-id": "req-web-1"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["resource"]["name"] == "web"
        assert r.json()["change"]["state"] == "pending"
        change = stack.wait_change(client, r.json()["change"])
    assert change["state"] == "committed", change
    sha = change["commit_sha"]
    assert sha == stack.store.head(org["id"])
    head = stack.store.log(org["id"], limit=1)[0]
    assert head.author.name == "Alice Smith"
    assert head.author.email == "alice@example.com"
    assert head.committer.name == "Hexabase"
    assert [(t.change_id, t.actor, t.request_id) for t in head.changes] == [
        (str(change["id"]), "alice@example.com", "req-web-1")
    ]
    assert "Hexabase-Change-Id: " + str(change["id"]) in head.message
    quota = stack.store.read_file(org["id"], f"workspaces/{WS}/projects/web/resourcequota.yaml")
    assert quota is not None and b"requests.cpu" in quota and b"4Gi" in quota
    namespace = stack.store.read_file(org["id"], f"workspaces/{WS}/projects/web/namespace.yaml")
    assert namespace is not None and b"name: web" in namespace
    assert stack.store.read_file(org["id"], f"host/workspaces/{WS}/vcluster.yaml") is not None
    assert stack.store.read_file(org["id"], "README.md") is not None


def test_redelivered_change_makes_no_commit(stack: Stack) -> None:
    with stack.client(stack.token("bob@example.com")) as client:
        org = create_org_ws(client, stack)
        r = client.post(
            f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects", json={"name": "api"}
        )
        change = stack.wait_change(client, r.json()["change"])
        assert change["state"] == "committed"
        head = stack.store.head(org["id"])
        commits = len(stack.store.log(org["id"], limit=1000))

        # Deliver the same change again, as JetStream would after a lost ack.
        import asyncio

        from api.queue import Queue

        async def redeliver() -> None:
            queue = await Queue.connect(
                stack.settings.nats_url,
                stream=stack.settings.stream_name,
                prefix=stack.settings.subject_prefix,
            )
            await queue.js.publish(
                queue.subjects.change(org["id"]),
                json.dumps({"change_id": change["id"], "organization_id": org["id"]}).encode(),
                headers={"Nats-Msg-Id": f"{change['id']}-again"},
            )
            # Wait until the worker has consumed it (the work queue is then empty).
            for _ in range(100):
                info = await queue.js.stream_info(stack.settings.stream_name)
                if info.state.messages == 0:
                    break
                await asyncio.sleep(0.05)
            await queue.close()

        asyncio.run(redeliver())
        time.sleep(0.3)
        assert stack.store.head(org["id"]) == head
        assert len(stack.store.log(org["id"], limit=1000)) == commits
        again = client.get(change["link"]).json()
        assert again["state"] == "committed" and again["commit_sha"] == change["commit_sha"]


def test_two_workers_racing_on_one_org_lose_no_update(stack: Stack) -> None:
    stack.start_worker()  # a second worker process on the same durable consumer
    with stack.client(stack.token("carol@example.com")) as client:
        org = create_org_ws(client, stack)

        def create(i: int) -> dict[str, Any]:
            r = client.post(
                f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects", json={"name": f"p{i:02d}"}
            )
            assert r.status_code == 201, r.text
            change: dict[str, Any] = r.json()["change"]
            return change

        with ThreadPoolExecutor(8) as pool:
            changes = list(pool.map(create, range(30)))
        settled = [stack.wait_change(client, c) for c in changes]
    assert all(c["state"] == "committed" for c in settled), settled
    seen = carried_by(stack, org["id"])
    for c in settled:
        assert seen.get(str(c["id"])) == [c["commit_sha"]], (c, seen.get(str(c["id"])))
    for i in range(30):
        path = f"workspaces/{WS}/projects/p{i:02d}/namespace.yaml"
        assert stack.store.read_file(org["id"], path) is not None, path
    # The burst was batched: fewer commits than changes (workspace + skeleton + projects).
    assert len(stack.store.log(org["id"], limit=1000)) < 30


@pytest.mark.parametrize("point", ["before-git-commit", "after-git-commit", "before-ack"])
def test_worker_killed_mid_change_commits_exactly_once_after_restart(
    stack: Stack, point: str
) -> None:
    with stack.client(stack.token("dave@example.com")) as client:
        org = create_org_ws(client, stack)
        for proc in list(stack.workers):
            proc.terminate()
            proc.wait(15)
        crashing = stack.start_worker({"HEXABASE_FAILPOINTS": point})
        r = client.post(
            f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects", json={"name": "db"}
        )
        change = r.json()["change"]
        assert crashing.wait(30) == 137  # died at the failpoint, like a SIGKILL
        carried = carried_by(stack, org["id"]).get(str(change["id"]), [])
        state = client.get(change["link"]).json()["state"]
        if point == "before-git-commit":
            assert (carried, state) == ([], "pending")
        elif point == "after-git-commit":
            assert (len(carried), state) == (1, "pending")
        else:
            assert (len(carried), state) == (1, "committed")
        stack.start_worker()  # the unacknowledged message is redelivered after ack_wait
        settled = stack.wait_change(client, change, timeout=60)
        # The redelivery has been handled once the work queue is empty again.
        deadline = time.monotonic() + 30
        while stream_messages(stack) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stream_messages(stack) == 0
    assert settled["state"] == "committed"
    final = carried_by(stack, org["id"])[str(change["id"])]
    assert final == [settled["commit_sha"]]  # in exactly one commit
    if carried:
        assert final == carried  # the commit made before the crash, not a second one
    assert stack.store.read_file(org["id"], f"workspaces/{WS}/projects/db/namespace.yaml")


def stream_messages(stack: Stack) -> int:
    import asyncio

    from api.queue import Queue

    async def count() -> int:
        queue = await Queue.connect(
            stack.settings.nats_url,
            stream=stack.settings.stream_name,
            prefix=stack.settings.subject_prefix,
        )
        info = await queue.js.stream_info(stack.settings.stream_name)
        await queue.close()
        return int(info.state.messages)

    return asyncio.run(count())


def test_bad_input_answers_422_and_writes_nothing(stack: Stack) -> None:
    with stack.client(stack.token("erin@example.com")) as client:
        org = create_org_ws(client, stack)
        base = f"/api/v1/organizations/{ORG}/workspaces/{WS}"
        ok = client.post(f"{base}/projects", json={"name": "web"})
        stack.wait_change(client, ok.json()["change"])
        head = stack.store.head(org["id"])
        with stack.sessions() as s:
            before = (
                s.scalar(select(func.count()).select_from(m.Change)),
                s.scalar(select(func.count()).select_from(m.Project)),
                s.scalar(select(func.count()).select_from(m.CronJob)),
                s.scalar(select(func.count()).select_from(m.Workspace)),
            )
        cases = [
            (f"{base}/projects", {"name": "Bad_Name"}, "name", "DNS-1123"),
            (f"{base}/projects", {"name": "../../etc"}, "name", "DNS-1123"),
            (f"{base}/projects", {"name": "a: b\n- c"}, "name", "DNS-1123"),
            (
                f"{base}/projects",
                {"name": "q", "quota": {"requests.cpu": "two"}},
                "requests.cpu",
                "quantity",
            ),
            (f"{base}/projects", {"name": "web"}, "name", "already exists"),
            (
                f"/api/v1/organizations/{ORG}/workspaces",
                {"name": "w2", "plan": "gold"},
                "plan",
                "unknown plan",
            ),
            (
                f"{base}/projects/web/cronjobs",
                {"name": "c", "schedule": "every day", "image": "busybox"},
                "schedule",
                "cron",
            ),
            (
                f"{base}/projects/web/cronjobs",
                {"name": "c", "schedule": "* * * * *", "image": "bad image"},
                "image",
                "image",
            ),
            (
                f"{base}/rolebindings",
                {"name": "b", "group": "WSUsers", "cluster_role": "cluster-admin"},
                "cluster_role",
                "custom ClusterRoles",
            ),
            (f"{base}/groups", {"name": "Team", "parent": "Nope"}, "parent", "no group"),
        ]
        for path, body, field, rule in cases:
            r = client.post(path, json=body)
            assert r.status_code == 422, (path, body, r.text)
            detail = r.json()["detail"]
            assert any(field in [str(x) for x in d["loc"]] for d in detail), (field, detail)
            assert any(rule in d["msg"] for d in detail), (rule, detail)
        time.sleep(0.5)
        with stack.sessions() as s:
            after = (
                s.scalar(select(func.count()).select_from(m.Change)),
                s.scalar(select(func.count()).select_from(m.Project)),
                s.scalar(select(func.count()).select_from(m.CronJob)),
                s.scalar(select(func.count()).select_from(m.Workspace)),
            )
        assert after == before
        assert stack.store.head(org["id"]) == head


def test_other_organizations_answer_404_and_ws_users_only_read(stack: Stack) -> None:
    owner = stack.client(stack.token("owner@example.com"))
    stranger = stack.client(stack.token("stranger@example.com"))
    reader = stack.client(stack.token("reader@example.com"))
    with owner, stranger, reader:
        create_org_ws(owner, stack)
        base = f"/api/v1/organizations/{ORG}/workspaces/{WS}"
        owner.post(f"{base}/projects", json={"name": "web"})
        assert stranger.get(f"/api/v1/organizations/{ORG}").status_code == 404
        assert stranger.get(f"{base}/projects").status_code == 404
        assert stranger.post(f"{base}/projects", json={"name": "x"}).status_code == 404
        r = owner.post(f"{base}/groups/WSUsers/members", json={"email": "reader@example.com"})
        assert r.status_code == 201, r.text
        assert [p["name"] for p in reader.get(f"{base}/projects").json()] == ["web"]
        r = reader.post(f"{base}/projects", json={"name": "x"})
        assert r.status_code == 403, r.text
        assert reader.get(f"/api/v1/organizations/{ORG}").status_code == 404


def test_change_left_unpublished_by_a_crash_is_published_by_the_sweep(stack: Stack) -> None:
    """An API process that died after its transaction committed but before it published:
    the change row exists with published_at NULL, and the relay's sweep carries it on."""
    with stack.client(stack.token("frank@example.com")) as client:
        org = create_org_ws(client, stack)
        with stack.sessions() as s, s.begin():
            workspace = s.scalars(select(m.Workspace).where(m.Workspace.name == WS)).one()
            actor = s.scalars(select(m.User).where(m.User.email == "frank@example.com")).one()
            s.add(m.Project(workspace_id=workspace.id, name="orphan", quota={}))
            change = m.Change(
                organization_id=org["id"],
                actor_id=actor.id,
                actor_name="Frank",
                actor_email=actor.email,
                action="project.create",
                target=f"{ORG}/{WS}/orphan",
                request_id="lost-request",
                state="pending",
            )
            s.add(change)
            s.flush()
            change_id = change.id
        settled = stack.wait_change(client, {"link": f"/api/v1/changes/{change_id}"})
    assert settled["state"] == "committed", settled
    assert stack.store.read_file(org["id"], f"workspaces/{WS}/projects/orphan/namespace.yaml")
    assert carried_by(stack, org["id"])[str(change_id)] == [settled["commit_sha"]]
