"""API call -> committed latency on the embedded stack (PostgreSQL, NATS, Git, one worker).

    python -m bench.api [--calls 200] [--workers 1]

Each call creates a project and waits (long-poll on its change) until the change is
committed. Prints one JSON object per line: a line per phase, then a summary line with
p50_ms and p99_ms. Targets: p50 <= 50 ms, p99 <= 250 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from api.db.migrate import upgrade
from api.embedded import EmbeddedNats, EmbeddedPostgres
from api.localstack import running_stack
from api.settings import get_settings
from bench.stats import percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hexabase-bench-") as tmp:
        root = Path(tmp)
        print("bench.api: starting PostgreSQL and NATS ...", file=sys.stderr)
        postgres = EmbeddedPostgres.start(root / "postgres")
        nats = EmbeddedNats.start(root / "nats")
        try:
            database_url = postgres.create_database("bench")
            upgrade(database_url)
            suffix = uuid.uuid4().hex[:8]
            env = {
                "HEXABASE_DATABASE_URL": database_url,
                "HEXABASE_NATS_URL": nats.url,
                "HEXABASE_DATA_DIR": str(root / "data"),
                "HEXABASE_STREAM_NAME": f"BENCH{suffix.upper()}",
                "HEXABASE_SUBJECT_PREFIX": f"bench{suffix}",
            }
            settings = get_settings(
                database_url=database_url,
                nats_url=nats.url,
                data_dir=root / "data",
                stream_name=env["HEXABASE_STREAM_NAME"],
                subject_prefix=env["HEXABASE_SUBJECT_PREFIX"],
            )
            with running_stack(settings, env, workers=args.workers) as stack:
                client = stack.client(stack.token("bench@example.com", "Bench"))
                client.post("/api/v1/organizations", json={"name": "bench"}).raise_for_status()
                r = client.post(
                    "/api/v1/organizations/bench/workspaces",
                    json={"name": "ws", "plan": "standard"},
                )
                r.raise_for_status()
                stack.wait_change(client, r.json()["change"])
                latencies: list[float] = []
                total = args.warmup + args.calls
                for i in range(total):
                    start = time.perf_counter()
                    r = client.post(
                        "/api/v1/organizations/bench/workspaces/ws/projects",
                        json={"name": f"p{i:04d}", "quota": {"requests.cpu": "1"}},
                    )
                    r.raise_for_status()
                    change = client.get(r.json()["change"]["link"], params={"wait": 10}).json()
                    elapsed = (time.perf_counter() - start) * 1000
                    if change["state"] != "committed":
                        raise SystemExit(f"change {change['id']} ended {change['state']}: {change}")
                    if i >= args.warmup:
                        latencies.append(elapsed)
                    if (i + 1) % 50 == 0:
                        print(f"bench.api: {i + 1}/{total} calls", file=sys.stderr)
                client.close()
        finally:
            nats.stop()
            postgres.stop()

    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        json.dumps(
            {
                "phase": "create_project_until_committed",
                "calls": len(latencies),
                "workers": args.workers,
                "mean_ms": round(statistics.fmean(latencies), 2),
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "max_ms": round(max(latencies), 2),
            }
        )
    )
    print(
        json.dumps(
            {
                "summary": "API call -> committed latency on the embedded stack",
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "target_p50_ms": 50,
                "target_p99_ms": 250,
                "met": p50 <= 50 and p99 <= 250,
            }
        )
    )


if __name__ == "__main__":
    main()
