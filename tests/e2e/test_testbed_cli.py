"""`hexabase testbed up` and `down`, as a person runs them: up prints where everything is and
serves the API; down, from another shell, stops everything it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.embedded import free_port

pytestmark = pytest.mark.timeout(600)


def test_testbed_up_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    workdir, port = tmp_path / "bed", free_port()
    log = tmp_path / "up.log"
    out = log.open("wb")  # a file, not a pipe: a full pipe would stall the testbed
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api.cli",
            "testbed",
            "up",
            "--workdir",
            str(workdir),
            "--port",
            str(port),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HEXABASE_DATA_DIR": str(tmp_path / "data")},
    )
    try:
        state = workdir / "testbed.json"
        deadline = time.monotonic() + 300
        while not state.exists():
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "testbed up did not come up in 300 s"
            time.sleep(0.5)
        info = json.loads(state.read_text())
        assert httpx.get(f"{info['api_url']}/healthz", timeout=5).json() == {"status": "ok"}
        assert Path(info["kubeconfig"]).exists()
        down = subprocess.run(
            [sys.executable, "-m", "api.cli", "testbed", "down", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        assert "stopped" in down.stdout
        up.wait(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        out.close()
    output = log.read_text()
    assert up.returncode == 0, output
    assert f"http://127.0.0.1:{port}" in output and "kubeconfig" in output and "token" in output
    leftovers = subprocess.run(
        ["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == [], leftovers
    assert not (workdir / "testbed.json").exists()
