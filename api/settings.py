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
    vcluster_chart_repository: str = "https://charts.loft.sh"
    # JetStream stream and subjects.
    stream_name: str = "HEXABASE_CHANGES"
    subject_prefix: str = "hexabase"
    # How a commit is made durable before the database records it: syncfs (two filesystem
    # flushes a commit), fsync (libgit2 fsyncs every object and ref) or none.
    git_durability: Literal["syncfs", "fsync", "none"] = "syncfs"
    # Seconds before JetStream redelivers a change a worker took but never acknowledged.
    ack_wait: float = 30.0
    # The host cluster whose Flux objects the status watcher follows. Empty: no watcher.
    kubeconfig: str = ""
    # How Flux reaches the repositories (tenant repo = <git_base_url>/<organization id>.git).
    # Empty: no platform repository is rendered (Hexabase only writes tenant repositories, and
    # the platform's GitRepositories are someone else's business). Set it to have Hexabase keep
    # the platform repository (id `platform`, beside the tenant repositories) up to date.
    git_base_url: str = Field(
        default="", pattern=r"^(https?://[A-Za-z0-9.:-]+(/[A-Za-z0-9._~/-]*)?)?$"
    )
    # The notification-controller's webhook receiver, e.g. http://127.0.0.1:9292 (Flux's
    # webhook-receiver Service). Empty: no notification; Flux polls (see POLL_INTERVAL).
    receiver_base_url: str = ""
    # The token of every Receiver (Secret `receiver-token`, key `token`, in <org>--system).
    receiver_token: str = ""
    # Seconds a notification may take; it is best effort and never fails a change.
    receiver_timeout: float = 2.0

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key == DEV_SECRET:
            raise ValueError("HEXABASE_SECRET_KEY must be set to a real secret in production")
        return self

    @model_validator(mode="after")
    def _receiver_needs_a_token(self) -> Settings:
        if self.receiver_base_url and len(self.receiver_token) < 16:
            raise ValueError(
                "HEXABASE_RECEIVER_TOKEN must be set (at least 16 characters) when "
                "HEXABASE_RECEIVER_BASE_URL is: it signs every notification"
            )
        return self

    @property
    def repos_path(self) -> Path:
        return self.repos_dir if self.repos_dir is not None else self.data_dir / "repos"


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
