"""Apply latency on the testbed: from an API call to the object visible in the workspace's API
server, through Git, Flux and the vCluster stand-in.

    python -m bench.apply [--changes 20] [--polling 3]

Each change creates a CronJob in a project through the API; the clock stops when the CronJob
can be read from the workspace API server. With the Receiver, Hexabase notifies Flux after
each commit; then the Receiver is suspended and a few changes wait for Flux's own polling
(the GitRepository interval), for comparison. One JSON line per change, then a summary with
p50_s and p95_s of commit -> applied for each mode. Target: p95 <= 5 s with the Receiver.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s

from api.db.session import make_engine, make_sessionmaker
from api.db.users import create_token
from api.testbed.cluster import api_client_from_kubeconfig
from api.testbed.testbed import Testbed
from bench.stats import percentile

ORG, WS, PROJECT = "bench", "ws", "jobs"


def log(message: str) -> None:
    print(f"bench.apply: {message}", file=sys.stderr, flush=True)


def wait(probe: Any, what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except k8s.ApiException:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench.apply: not within {timeout:.0f} s: {what}")


def one_change(api: httpx.Client, batch: k8s.BatchV1Api, name: str, mode: str) -> dict[str, Any]:
    start = time.monotonic()
    r = api.post(
        f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects/{PROJECT}/cronjobs",
        json={"name": name, "schedule": "*/5 * * * *", "image": "docker.io/library/busybox:1.36"},
    )
    r.raise_for_status()
    change = api.get(r.json()["change"]["link"], params={"wait": 30}).json()
    committed = time.monotonic()
    wait(lambda: batch.read_namespaced_cron_job(name, PROJECT), f"CronJob {name}")
    visible = time.monotonic()
    row = {
        "mode": mode,
        "change": change["id"],
        "api_to_committed_s": round(committed - start, 3),
        "commit_to_applied_s": round(visible - committed, 3),
        "api_to_applied_s": round(visible - start, 3),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--polling", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hexabase-bench-apply-"))
    started = time.monotonic()
    bed = Testbed.start(workdir)
    log(f"testbed up in {time.monotonic() - started:.1f} s, {bed.rss_bytes() / 2**30:.2f} GiB RSS")
    try:
        engine = make_engine(bed.env["HEXABASE_DATABASE_URL"], pool_size=1)
        token = create_token(make_sessionmaker(engine), email="bench@example.com")
        engine.dispose()
        api = httpx.Client(
            base_url=bed.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        api.post("/api/v1/organizations", json={"name": ORG}).raise_for_status()
        api.post(
            f"/api/v1/organizations/{ORG}/workspaces", json={"name": WS, "plan": "standard"}
        ).raise_for_status()
        r = api.post(
            f"/api/v1/organizations/{ORG}/workspaces/{WS}/projects", json={"name": PROJECT}
        )
        r.raise_for_status()
        log("waiting for the workspace to be ready ...")
        wait(
            lambda: (
                api.get(f"/api/v1/organizations/{ORG}/workspaces/{WS}").json()["state"] == "ready"
            ),
            "workspace ready",
        )
        with bed.host.api_client() as host:
            secret = k8s.CoreV1Api(host).read_namespaced_secret("vc-vcluster", f"{ORG}--{WS}")
        workspace = api_client_from_kubeconfig(base64.b64decode((secret.data or {})["config"]))
        batch = k8s.BatchV1Api(workspace)
        wait(lambda: k8s.CoreV1Api(workspace).read_namespace(PROJECT), "project namespace")
        rows = [one_change(api, batch, f"r{i:02d}", "receiver") for i in range(args.changes)]
        log("suspending the Receiver: the next changes wait for Flux's polling")
        with bed.host.api_client() as host:
            k8s.CustomObjectsApi(host).patch_namespaced_custom_object(
                "notification.toolkit.fluxcd.io",
                "v1",
                f"{ORG}--system",
                "receivers",
                ORG,
                {"spec": {"suspend": True}},
            )
        rows += [one_change(api, batch, f"p{i:02d}", "polling") for i in range(args.polling)]
        api.close()
        memory = bed.rss_bytes()
    finally:
        bed.stop()
    summary: dict[str, Any] = {"summary": "API call -> object visible in the workspace API server"}
    for mode in ("receiver", "polling"):
        values = [r["commit_to_applied_s"] for r in rows if r["mode"] == mode]
        if values:
            summary[f"{mode}_p50_s"] = round(percentile(values, 0.5), 2)
            summary[f"{mode}_p95_s"] = round(percentile(values, 0.95), 2)
            summary[f"{mode}_mean_s"] = round(statistics.fmean(values), 2)
            summary[f"{mode}_changes"] = len(values)
    summary["p50_s"] = summary["receiver_p50_s"]
    summary["p95_s"] = summary["receiver_p95_s"]
    summary["testbed_rss_gib"] = round(memory / 2**30, 2)
    summary["target_p95_s"] = 5
    summary["met"] = summary["p95_s"] <= 5
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
