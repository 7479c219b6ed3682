"""One settings object, built when asked (never at import time), from HEXABASE_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEXABASE_", extra="ignore")

    environment: str = Field(default="development", pattern=r"^(development|test|production)$")
    data_dir: Path = Path(".data")
    # Empty: start the embedded PostgreSQL (pgserver) under data_dir.
    database_url: str = ""
    # Empty: start the embedded nats-server with JetStream under data_dir.
    nats_url: str = ""
    # Where tenant bare repositories live; default <data_dir>/repos.
    repos_dir: Path | None = None
    # Optional remote to push each tenant repo to: a template with {org_id}, e.g.
    # https://git.example.com/tenants/{org_id}.git
    push_url_template: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # The OIDC issuer every workspace API server trusts (this installation's public URL).
    issuer_url: str = "http://127.0.0.1:8000"
    secret_key: str = DEV_SECRET
    committer_name: str = "Hexabase"
    committer_email: str = "hexabase@localhost"
    vcluster_chart_version: str = "0.36.1"
    # JetStream stream and subjects.
    stream_name: str = "HEXABASE_CHANGES"
    subject_prefix: str = "hexabase"
    # How a commit is made durable before the database records it: syncfs (two filesystem
    # flushes a commit), fsync (libgit2 fsyncs every object and ref) or none.
    git_durability: Literal["syncfs", "fsync", "none"] = "syncfs"
    # Seconds before JetStream redelivers a change a worker took but never acknowledged.
    ack_wait: float = 30.0

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEV_SECRET:
            raise ValueError("HEXABASE_SECRET_KEY must be set to a real secret in production")
        return self

    @property
    def repos_path(self) -> Path:
        return self.repos_dir if self.repos_dir is not None else self.data_dir / "repos"


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
