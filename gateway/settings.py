"""Process settings, read once from the environment (prefix POLYROUTE_); the only module that reads os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StateFailureMode(StrEnum):
    """What limits and budgets do while the shared state store is unreachable."""

    OPEN = "open"  # admit requests, count the outage
    CLOSED = "closed"  # reject requests that need the store with 503


class Settings(BaseSettings):
    """Everything a polyroute process is configured with besides the policy file."""

    model_config = SettingsConfigDict(env_prefix="POLYROUTE_", extra="ignore")

    policy: Path | None = None
    redis_url: str | None = None
    admin_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    metrics_port: int | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    state_failure_mode: StateFailureMode = StateFailureMode.OPEN
    log_level: str = "info"
    watch_policy: bool = True
    shutdown_grace_seconds: float = 30.0
    usd_per_cny: float = 0.14
    usd_per_eur: float = 1.08
    multiproc_dir: Path | None = None
    # The usual proxy variables (no POLYROUTE_ prefix), for `type: openai` upstreams.
    http_proxy: str | None = Field(default=None, validation_alias=AliasChoices("HTTP_PROXY", "http_proxy"))
    https_proxy: str | None = Field(default=None, validation_alias=AliasChoices("HTTPS_PROXY", "https_proxy"))
    no_proxy: str | None = Field(default=None, validation_alias=AliasChoices("NO_PROXY", "no_proxy"))
    # Slow or greedy clients (gateway.api.server_protocol): a request's headers must arrive within
    # header_timeout_seconds of the connection opening or the previous response ending; its body may pause at most
    # body_timeout_seconds; each worker holds at most max_connections client connections.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=2048, gt=0)


def environment() -> Mapping[str, str]:
    """The process environment, for `${VAR}` expansion in policies."""
    return os.environ


def prepare_litellm_environment() -> None:
    """Keep litellm from downloading its price map at import: it must use the copy it ships."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")


def export_for_workers(settings: Settings, multiproc_dir: Path | None) -> None:
    """Worker processes read their settings from the environment: write the resolved ones there."""
    for name in ("policy", "redis_url", "admin_key", "max_body_bytes", "state_failure_mode", "metrics_port"):
        value = getattr(settings, name)
        if value is not None:
            os.environ[f"POLYROUTE_{name.upper()}"] = str(getattr(value, "value", value))
    for name in ("header_timeout_seconds", "body_timeout_seconds", "max_connections"):
        os.environ[f"POLYROUTE_{name.upper()}"] = str(getattr(settings, name))
    if multiproc_dir is not None:
        # prometheus-client picks its multiprocess value class from this variable when first imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
        os.environ["POLYROUTE_MULTIPROC_DIR"] = str(multiproc_dir)
