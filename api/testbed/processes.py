"""Local processes the test bed starts: one session each, output in a log file under a work
directory, a readiness wait that fails early (with the log's tail) if the process dies, and a
stop that leaves nothing running (SIGTERM to the whole session, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from api.embedded import free_port, wait_for_port

__all__ = [
    "ManagedProcess",
    "ProcessExitedError",
    "free_port",
    "free_ports",
    "session_rss_bytes",
    "wait_for_port",
]


class ProcessExitedError(RuntimeError):
    """A managed process exited (or never became ready)."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _session_pids(sid: int) -> list[int]:
    """Every live process in session ``sid`` (Linux /proc)."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def session_rss_bytes(sid: int) -> int:
    """Resident memory of every process in session ``sid``, summed."""
    return sum(_rss_bytes(pid) for pid in _session_pids(sid))


@dataclass
class ManagedProcess:
    """A local server process started in its own session, logging to ``log_path``."""

    name: str
    args: tuple[str, ...]
    log_path: Path
    popen: subprocess.Popen[bytes] = field(repr=False)

    @classmethod
    def start(
        cls,
        name: str,
        args: Sequence[str | Path],
        *,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start ``args``; stdout and stderr go to ``<workdir>/logs/<name>.log``.

        ``env`` is added to this process's environment.
        """
        log_dir = workdir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        argv = tuple(str(a) for a in args)
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or workdir,
                env={**os.environ, **(env or {})},
                # Own session: stop() signals the process and anything it started.
                start_new_session=True,
            )
        return cls(name=name, args=argv, log_path=log_path, popen=popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(
        self, ready: Callable[[], bool], *, timeout: float = 60.0, what: str = "ready"
    ) -> None:
        """Poll ``ready()`` until true; raise ProcessExitedError if the process exits first
        or ``timeout`` passes (the message carries the log's tail)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise ProcessExitedError(
                    f"{self.name} exited with code {self.popen.returncode} before it was "
                    f"{what}; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if ready():
                    return
            except (OSError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise ProcessExitedError(
                    f"{self.name} was not {what} within {timeout:.0f}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def wait_for_http(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """Wait until GET ``url`` answers 200."""
        with httpx.Client(verify=verify, timeout=2.0) as client:
            self.wait_until(
                lambda: client.get(url).status_code == 200,
                timeout=timeout,
                what=f"answering 200 at {url}",
            )

    def wait_for_port(self, port: int, *, timeout: float = 60.0) -> None:
        """Wait until something accepts connections on 127.0.0.1:``port``."""

        def listening() -> bool:
            try:
                wait_for_port(port, timeout=0.2, what=self.name)
            except RuntimeError:
                return False
            return True

        self.wait_until(listening, timeout=timeout, what=f"listening on 127.0.0.1:{port}")

    def rss_bytes(self) -> int:
        """Resident memory of the process and everything in its session."""
        return session_rss_bytes(self.pid) if self.running else 0

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the session, wait up to ``timeout``, then SIGKILL whatever is left."""
        sid = self.pid
        if self.running:
            self._signal_session(sid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # The leader may be gone while children it started live on: kill the session.
        self._signal_session(sid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(5)
        deadline = time.monotonic() + 5
        while _session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.05)

    @staticmethod
    def _signal_session(sid: int, sig: signal.Signals) -> None:
        # start_new_session makes the leader's pid the process group id as well.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, sig)
