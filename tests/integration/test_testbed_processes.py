"""Managed processes: readiness waits fail early with the log's tail, and stop() leaves
nothing of the process's session running, children included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from api.testbed.processes import (
    ManagedProcess,
    ProcessExitedError,
    free_ports,
    session_rss_bytes,
)

pytestmark = pytest.mark.integration


def test_stop_ends_the_process_and_the_children_it_started(tmp_path: Path) -> None:
    # The shell ignores SIGTERM and leaves a child behind: stop() must still clean up.
    proc = ManagedProcess.start(
        "stubborn",
        ["sh", "-c", "trap '' TERM; sleep 300 & echo started; wait"],
        workdir=tmp_path,
    )
    proc.wait_until(lambda: "started" in proc.log_path.read_text(), timeout=10)
    assert session_rss_bytes(proc.pid) > 0
    start = time.monotonic()
    proc.stop(timeout=1)
    assert time.monotonic() - start < 10
    assert not proc.running
    assert session_rss_bytes(proc.pid) == 0


def test_a_process_that_exits_fails_the_wait_with_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess.start(
        "broken", ["sh", "-c", "echo bad flag >&2; exit 3"], workdir=tmp_path
    )
    with pytest.raises(ProcessExitedError, match=r"exited with code 3[\s\S]*bad flag"):
        proc.wait_for_port(free_ports(1)[0], timeout=10)
    proc.stop()


def test_wait_for_port_returns_once_the_process_listens(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    proc = ManagedProcess.start(
        "http", ["python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)], workdir=tmp_path
    )
    try:
        proc.wait_for_http(f"http://127.0.0.1:{port}/", timeout=20)
    finally:
        proc.stop()
    assert not proc.running


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
