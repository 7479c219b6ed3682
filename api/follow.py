"""`hexabase changes watch ID`: follow a change until Flux applied it (exit 0) or failed to
(exit 1, with the reason), printing each step as it happens."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import httpx

FINAL = ("applied", "failed")
SYMBOL = {"pending": "…", "committed": "✓", "applied": "✓", "failed": "✗"}


def state_events(client: httpx.Client, change_id: int) -> Iterator[dict[str, Any]]:
    with client.stream("GET", f"/api/v1/changes/{change_id}/events", timeout=None) as response:
        if response.status_code != 200:
            response.read()
            detail = response.json().get("detail", response.text) if response.content else ""
            raise SystemExit(f"hexabase: change {change_id}: {response.status_code} {detail}")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "state":
                yield json.loads(line[len("data: ") :])


def describe(event: dict[str, Any], elapsed: float) -> str:
    state = str(event.get("state"))
    line = f"[{elapsed:6.1f}s] {SYMBOL.get(state, '·')} {state}"
    if event.get("commit_sha"):
        line += f" as {str(event['commit_sha'])[:12]}"
    if event.get("reason"):
        line += f": {event['reason']}"
    return line


def watch(base_url: str, token: str, change_id: int, *, out: TextIO = sys.stdout) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    last = ""
    try:
        with httpx.Client(base_url=base_url, headers=headers) as client:
            for event in state_events(client, change_id):
                state = str(event.get("state"))
                if "action" in event and not last:
                    print(f"change {change_id}: {event['action']} {event['target']}", file=out)
                if state != last:
                    print(describe(event, time.monotonic() - started), file=out, flush=True)
                    last = state
                if state in FINAL:
                    if state == "failed" and event.get("raw"):
                        print(f"  Flux said: {event['raw']}", file=out)
                    return 0 if state == "applied" else 1
    except httpx.TransportError as error:
        print(f"hexabase: lost the API at {base_url}: {error}", file=sys.stderr)
        return 2
    print("hexabase: the stream ended before the change settled", file=sys.stderr)
    return 2
