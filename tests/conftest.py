"""Shared fixtures: real PostgreSQL (pgserver) and NATS (nats-server) for the whole session,
a fresh migrated database, stream and repository directory for every test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.embedded import EmbeddedNats, EmbeddedPostgres

TEMPLATE_DB = "hexabase_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    from api.db.migrate import upgrade

    # Not under pytest's basetemp: pytest tightens its permissions while tests run, and
    # PostgreSQL (run by pgserver as an unprivileged user when we are root) then loses
    # access to its own data directory.
    root = Path(tempfile.mkdtemp(prefix="hexabase-test-pg-"))
    server = EmbeddedPostgres.start(root / "data")
    # Migrate once into a template; every test copies it (CREATE DATABASE ... TEMPLATE).
    upgrade(server.create_database(TEMPLATE_DB))
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats.start(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture
def database_url(postgres: EmbeddedPostgres) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name, template=TEMPLATE_DB)
    yield url
    postgres.drop_database(name)


@pytest.fixture
def settings_env(database_url: str, nats_server: EmbeddedNats, tmp_path: Path) -> dict[str, str]:
    """HEXABASE_* variables for one isolated stack: its own database, stream and repos."""
    suffix = uuid.uuid4().hex[:10]
    return {
        "HEXABASE_ENVIRONMENT": "test",
        "HEXABASE_DATABASE_URL": database_url,
        "HEXABASE_NATS_URL": nats_server.url,
        "HEXABASE_DATA_DIR": str(tmp_path / "data"),
        "HEXABASE_STREAM_NAME": f"T{suffix.upper()}",
        "HEXABASE_SUBJECT_PREFIX": f"t{suffix}",
        "HEXABASE_ISSUER_URL": "https://hexabase.test",
        # Every test stack keeps the platform repository too (crash and race tests included).
        "HEXABASE_GIT_BASE_URL": "http://git.hexabase.test/repos",
    }


@pytest.fixture
def settings(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from api.settings import get_settings

    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    return get_settings()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
