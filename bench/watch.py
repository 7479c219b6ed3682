"""Status watcher lag: from Flux marking a Kustomization Ready to the database row and to the
server-sent event, p50 and p99 over at least 20 changes.

    python -m bench.watch [--changes 20]

Runs a real kube-apiserver with the Flux CRDs (api.testbed.cluster), the embedded stack and
`hexabase watcher` as its own process. For each change the bench writes the Kustomizations'
status as kustomize-controller would (Ready=True, lastAppliedRevision = the change's commit),
through the status subresource, then measures until the change reads `applied` in
PostgreSQL and until its SSE event arrives. Kubernetes timestamps have one-second precision,
so the lag is measured from the moment the API server accepted the status (`*_ms`); the lag
from the condition's own lastTransitionTime is printed beside it (`*_from_transition_ms`,
inflated by up to a second of truncation). Target: p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s

from api.db import models as m
from api.db.migrate import upgrade
from api.embedded import EmbeddedNats, EmbeddedPostgres
from api.localstack import running_stack
from api.settings import get_settings
from api.testbed.cluster import HostCluster
from bench.stats import percentile


def log(message: str) -> None:
    print(f"bench.watch: {message}", file=sys.stderr, flush=True)


def sse_reader(
    base_url: str, token: str, org: str, out: queue.Queue[tuple[float, dict[str, Any]]]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/api/v1/organizations/{org}/events"
    with (
        httpx.Client(base_url=base_url, headers=headers) as client,
        client.stream("GET", path, timeout=None) as response,
    ):
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "state":
                out.put((time.monotonic(), json.loads(line[6:])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hexabase-bench-watch-"))
    log("starting kube-apiserver, PostgreSQL and NATS ...")
    host = HostCluster.start(root / "host")
    postgres = EmbeddedPostgres.start(root / "postgres")
    nats = EmbeddedNats.start(root / "nats")
    watcher: subprocess.Popen[bytes] | None = None
    try:
        host.install_crds(["source-controller", "kustomize-controller", "helm-controller"])
        database_url = postgres.create_database("bench")
        upgrade(database_url)
        suffix = uuid.uuid4().hex[:8]
        env = {
            "HEXABASE_DATABASE_URL": database_url,
            "HEXABASE_NATS_URL": nats.url,
            "HEXABASE_DATA_DIR": str(root / "data"),
            "HEXABASE_STREAM_NAME": f"BW{suffix.upper()}",
            "HEXABASE_SUBJECT_PREFIX": f"bw{suffix}",
            "HEXABASE_KUBECONFIG": str(host.kubeconfig),
        }
        settings = get_settings(
            database_url=database_url,
            nats_url=nats.url,
            data_dir=root / "data",
            stream_name=env["HEXABASE_STREAM_NAME"],
            subject_prefix=env["HEXABASE_SUBJECT_PREFIX"],
        )
        with running_stack(settings, env) as stack:
            watcher = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "watcher"], env={**os.environ, **env}
            )
            token = stack.token("bench@example.com")
            client = stack.client(token)
            org = "bench"
            client.post("/api/v1/organizations", json={"name": org}).raise_for_status()
            r = client.post(
                f"/api/v1/organizations/{org}/workspaces", json={"name": "ws", "plan": "starter"}
            )
            stack.wait_change(client, r.json()["change"])
            api = host.api_client()
            core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
            group, version, plural = "kustomize.toolkit.fluxcd.io", "v1", "kustomizations"
            targets = [(f"{org}--system", "host"), (f"{org}--ws", "hexabase.workspace")]
            spec = {
                "interval": "1m",
                "path": "./",
                "prune": True,
                "sourceRef": {"kind": "GitRepository", "name": org},
            }
            for namespace, name in targets:
                core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
                custom.create_namespaced_custom_object(
                    group,
                    version,
                    namespace,
                    plural,
                    {
                        "apiVersion": f"{group}/{version}",
                        "kind": "Kustomization",
                        "metadata": {"name": name},
                        "spec": spec,
                    },
                )
            events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
            threading.Thread(
                target=sse_reader, args=(stack.base_url, token, org, events), daemon=True
            ).start()
            time.sleep(1.0)
            rows: list[dict[str, float]] = []
            for i in range(args.changes):
                r = client.post(
                    f"/api/v1/organizations/{org}/workspaces/ws/projects", json={"name": f"p{i}"}
                )
                change = stack.wait_change(client, r.json()["change"])
                sha, change_id = change["commit_sha"], change["id"]
                now = datetime.now(UTC)
                transition = now.strftime("%Y-%m-%dT%H:%M:%SZ")
                for namespace, name in targets:
                    status = {
                        "observedGeneration": 1,
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True",
                                "reason": "ReconciliationSucceeded",
                                "message": f"Applied revision: main@sha1:{sha}",
                                "lastTransitionTime": transition,
                            }
                        ],
                        "lastAppliedRevision": f"main@sha1:{sha}",
                        "lastAttemptedRevision": f"main@sha1:{sha}",
                    }
                    custom.patch_namespaced_custom_object_status(
                        group, version, namespace, plural, name, {"status": status}
                    )
                accepted = time.monotonic()
                truncation = (now - now.replace(microsecond=0)).total_seconds()
                db_at = sse_at = None
                deadline = accepted + 30
                while (db_at is None or sse_at is None) and time.monotonic() < deadline:
                    if db_at is None:
                        with stack.sessions() as s:
                            if s.get_one(m.Change, change_id).state == "applied":
                                db_at = time.monotonic()
                    try:
                        at, event = events.get(timeout=0.002)
                        if (
                            event.get("entity") == "change"
                            and event.get("id") == str(change_id)
                            and event.get("state") == "applied"
                        ):
                            sse_at = at
                    except queue.Empty:
                        pass
                if db_at is None or sse_at is None:
                    raise SystemExit(f"change {change_id} was not seen applied within 30 s")
                row = {
                    "change": change_id,
                    "db_ms": round((db_at - accepted) * 1000, 1),
                    "sse_ms": round((sse_at - accepted) * 1000, 1),
                    "db_from_transition_ms": round((db_at - accepted + truncation) * 1000, 1),
                    "sse_from_transition_ms": round((sse_at - accepted + truncation) * 1000, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            client.close()
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(15)
        nats.stop()
        postgres.stop()
        host.stop()
    summary: dict[str, Any] = {"summary": "status watcher lag, Ready -> database row and SSE event"}
    for key in ("db_ms", "sse_ms", "db_from_transition_ms", "sse_from_transition_ms"):
        values = [r[key] for r in rows]
        summary[f"{key[:-3]}_p50_ms"] = round(percentile(values, 0.5), 1)
        summary[f"{key[:-3]}_p99_ms"] = round(percentile(values, 0.99), 1)
    summary["changes"] = len(rows)
    summary["target_p99_ms"] = 1000
    summary["met"] = summary["db_p99_ms"] <= 1000 and summary["sse_p99_ms"] <= 1000
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
