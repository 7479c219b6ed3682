"""Server-sent events through NATS: a change's stream starts with its current state and
follows it; an organization's stream carries transitions in the order they were published,
and a change stream ends at a final state."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
from typing import Any

import httpx

from api.localstack import Stack
from api.queue import Queue


def read_events(
    client: httpx.Client, path: str, out: queue.Queue[dict[str, Any]], stop: threading.Event
) -> None:
    """Parse `event: state` lines into `out`; put {"closed": True} when the server ends the
    stream. A connection closed under it after `stop` is the test's own doing."""
    try:
        with client.stream("GET", path, timeout=30) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            event = ""
            for line in response.iter_lines():
                if line == ": subscribed":
                    out.put({"subscribed": True})
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: ") and event == "state":
                    out.put(json.loads(line[len("data: ") :]))
                if stop.is_set():
                    return
    except httpx.TransportError:
        if stop.is_set():
            return
        raise
    out.put({"closed": True})


def publish(stack: Stack, change_id: int | None, org_id: str, bodies: list[dict[str, Any]]) -> None:
    async def run() -> None:
        q = await Queue.connect(
            stack.settings.nats_url,
            stream=stack.settings.stream_name,
            prefix=stack.settings.subject_prefix,
        )
        for body in bodies:
            await q.publish_event(change_id, org_id, body)
        await q.close()

    asyncio.run(run())


def test_change_stream_starts_with_current_state_and_follows_it(stack: Stack) -> None:
    with stack.client(stack.token("ivy@example.com")) as client:
        org = client.post("/api/v1/organizations", json={"name": "initech"}).json()
        change = org["change"]
        stack.wait_change(client, change)
        # Stop the worker so the next change stays pending while the stream opens.
        for proc in stack.workers:
            proc.terminate()
            proc.wait(15)
        r = client.post(
            "/api/v1/organizations/initech/workspaces", json={"name": "dev", "plan": "starter"}
        )
        change = r.json()["change"]
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        stop = threading.Event()
        reader = threading.Thread(
            target=read_events, args=(client, f"{change['link']}/events", events, stop), daemon=True
        )
        reader.start()
        first = events.get(timeout=10)
        assert (first["id"], first["state"]) == (str(change["id"]), "pending")
        stack.start_worker()
        second = events.get(timeout=30)
        assert second["state"] == "committed" and second["commit_sha"]
        # The watcher's verdict ends the stream.
        publish(
            stack,
            change["id"],
            org["resource"]["id"],
            [{"entity": "change", "id": str(change["id"]), "state": "applied"}],
        )
        assert events.get(timeout=10)["state"] == "applied"
        assert events.get(timeout=10) == {"closed": True}
        stop.set()
        reader.join(10)


def test_organization_stream_delivers_transitions_in_order(stack: Stack) -> None:
    with stack.client(stack.token("jo@example.com")) as client:
        org = client.post("/api/v1/organizations", json={"name": "hooli"}).json()["resource"]
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        stop = threading.Event()
        reader = threading.Thread(
            target=read_events,
            args=(client, "/api/v1/organizations/hooli/events", events, stop),
            daemon=True,
        )
        reader.start()
        assert events.get(timeout=10) == {"subscribed": True}  # the server has subscribed
        states = ["provisioning", "degraded", "ready", "deleting"]
        publish(
            stack,
            None,
            org["id"],
            [{"entity": "workspace", "id": "w1", "state": s} for s in states],
        )
        got = [events.get(timeout=10) for _ in states]
        # The worker's own "committed" event for the organization may come first; skip it.
        got = [e for e in got if e.get("entity") == "workspace"]
        while len(got) < len(states):
            e = events.get(timeout=10)
            if e.get("entity") == "workspace":
                got.append(e)
        assert [e["state"] for e in got] == states
        stop.set()
        client.close()
        reader.join(10)
    with stack.client(stack.token("stranger2@example.com")) as other:
        assert other.get("/api/v1/organizations/hooli/events").status_code == 404


def test_cli_watch_follows_a_change_and_exits_by_its_outcome(stack: Stack) -> None:
    token = stack.token("kim@example.com")
    with stack.client(token) as client:
        created = client.post("/api/v1/organizations", json={"name": "umbrella"}).json()
        org_id = created["resource"]["id"]
        first = stack.wait_change(client, created["change"])
        second = client.post(
            "/api/v1/organizations/umbrella/workspaces", json={"name": "dev", "plan": "starter"}
        ).json()["change"]
        stack.wait_change(client, second)
    outcomes = {first["id"]: ("applied", None), second["id"]: ("failed", "The cluster refused it.")}
    for change_id, (state, reason) in outcomes.items():
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "changes",
                "watch",
                str(change_id),
                "--api",
                stack.base_url,
                "--token",
                token,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        # The header and the current state are printed once the stream is subscribed.
        assert watcher.stdout is not None
        printed = [watcher.stdout.readline(), watcher.stdout.readline()]
        assert "committed as" in printed[1], printed
        publish(
            stack,
            change_id,
            org_id,
            [
                {
                    "entity": "change",
                    "id": str(change_id),
                    "state": state,
                    "reason": reason,
                    "raw": "ReconciliationFailed: x is invalid" if reason else None,
                }
            ],
        )
        rest, _ = watcher.communicate(timeout=30)
        out = "".join(printed) + rest
        assert watcher.returncode == (0 if state == "applied" else 1), out
        lines = out.splitlines()
        assert "committed as" in out and lines[-1 if state == "applied" else -2].endswith(
            state if state == "applied" else f"{state}: {reason}"
        ), out
        if reason:
            assert "Flux said: ReconciliationFailed: x is invalid" in out
