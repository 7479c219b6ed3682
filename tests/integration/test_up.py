"""`hexabase up` on embedded defaults: it starts PostgreSQL, NATS, migrations, the API and a
worker; a token from `hexabase token create` works; an API call ends as a commit in a bare
repository under the data directory; Ctrl-C stops everything it started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.embedded import free_port


def test_up_serves_api_and_worker_on_embedded_defaults() -> None:
    port = free_port()
    data = Path(os.environ.get("TMPDIR", "/tmp")) / f"hexabase-up-{port}"
    env = {
        **os.environ,
        "HEXABASE_DATA_DIR": str(data),
        "HEXABASE_PORT": str(port),
    }
    for key in ("HEXABASE_DATABASE_URL", "HEXABASE_NATS_URL"):
        env.pop(key, None)
    up = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("hexabase up did not serve /healthz within 90 s")
        runtime = json.loads((data / "runtime.json").read_text())
        assert runtime["database_url"].startswith("postgresql://")
        token = subprocess.run(
            [sys.executable, "-m", "api.cli", "token", "create", "--email", "new@example.com"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert token.startswith("hxb_")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            assert client.get("/api/v1/me").json()["email"] == "new@example.com"
            assert "/api/v1/organizations" in client.get("/openapi.json").json()["paths"]
            r = client.post("/api/v1/organizations", json={"name": "firstorg"})
            assert r.status_code == 201, r.text
            change = client.get(r.json()["change"]["link"], params={"wait": 30}).json()
        assert change["state"] == "committed", change
        repo = data / "repos" / f"{r.json()['resource']['id']}.git"
        log = subprocess.run(
            ["git", "--git-dir", str(repo), "log", "--format=%H %an%n%b", "-1"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert log.startswith(change["commit_sha"])
        assert f"Hexabase-Change-Id: {change['id']}" in log
    finally:
        os.killpg(up.pid, signal.SIGINT)
        output = up.communicate(timeout=60)[0].decode()
    assert f"http://127.0.0.1:{port}" in output
    assert "token create" in output
    # Nothing it started is left running: no process still uses the data directory.
    time.sleep(0.5)
    leftovers = subprocess.run(
        ["pgrep", "-f", str(data)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], leftovers
    shutil.rmtree(data, ignore_errors=True)
