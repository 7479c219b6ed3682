"""A running Hexabase in one process tree, for integration tests and benchmarks: the API
(uvicorn, in a thread) and worker processes (real subprocesses, so a test can kill one),
on a PostgreSQL and NATS that the caller started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from api.db.session import make_engine, make_sessionmaker
from api.db.users import create_token
from api.embedded import free_port, wait_for_port
from api.settings import Settings
from reconciler.gitstore import GitStore


class Stack:
    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = {**os.environ, **env}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.engine = make_engine(settings.database_url, pool_size=2)
        self.sessions = make_sessionmaker(self.engine)
        self.store = GitStore(settings.repos_path)
        self.base_url = f"http://127.0.0.1:{settings.port}"

    def start_worker(self, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "worker"],
            env={**self.env, **(extra_env or {})},
        )
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def token(self, email: str, name: str = "") -> str:
        return create_token(self.sessions, email=email, name=name or email.split("@")[0].title())

    def wait_change(
        self, client: httpx.Client, change: dict[str, Any], timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body: dict[str, Any] = client.get(change["link"], params={"wait": 5}).json()
            if body["state"] != "pending" or time.monotonic() > deadline:
                return body


@contextmanager
def running_stack(settings: Settings, env: dict[str, str], *, workers: int = 1) -> Iterator[Stack]:
    port = free_port()
    settings = settings.model_copy(update={"port": port})
    env = {**env, "HEXABASE_PORT": str(port)}
    stack = Stack(settings, env)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, what="hexabase api")
    for _ in range(workers):
        stack.start_worker()
    try:
        yield stack
    finally:
        for proc in stack.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in stack.workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.should_exit = True
        thread.join(15)
        stack.engine.dispose()
