"""Process settings, read once from the environment (prefix POLYROUTE_); the only module that reads os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator, model_validator
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
    # What one upstream answer may hold in memory: a body read whole (after decoding), one event of a stream.
    max_upstream_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_sse_event_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
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
    # Browser origins allowed to call /v1 (comma list of scheme://host[:port], or *); unset = no CORS headers.
    cors_origins: str | None = None
    # Portability: distinct routing facts kept per UTC day (identical facts share one row with a count), and how
    # often the lock-in gauges are recomputed.
    routing_facts_per_day: int = Field(default=5_000, gt=0)
    lockin_refresh_seconds: float = Field(default=60.0, gt=0)
    # GET /openapi.json and its interactive page /docs; false turns both off.
    docs: bool = True
    # Without a Redis URL, a directory here makes the workers of one machine share limits, budgets and usage through
    # one SQLite database in it (kept across restarts); `serve --workers N` uses a temporary one when it is unset.
    state_dir: Path | None = None
    # Tracing (OpenTelemetry, README "Tracing"): on when an OTLP endpoint is set through the standard variables;
    # the SDK reads the rest of OTEL_* itself. Prompt and completion text only with otel_capture_content.
    otel_endpoint: str | None = Field(default=None, validation_alias=AliasChoices(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"))
    otel_protocol: str = Field(default="http/protobuf", validation_alias=AliasChoices(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"))
    otel_traces_exporter: str = Field(default="otlp", validation_alias="OTEL_TRACES_EXPORTER")
    otel_sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    otel_service_name: str | None = Field(default=None, validation_alias="OTEL_SERVICE_NAME")
    otel_capture_content: bool = False
    otel_bsp_max_queue_size: int = Field(default=2048, gt=0, validation_alias="OTEL_BSP_MAX_QUEUE_SIZE")
    otel_traces_sampler: str | None = Field(default=None, validation_alias="OTEL_TRACES_SAMPLER")
    otel_traces_sampler_arg: str | None = Field(default=None, validation_alias="OTEL_TRACES_SAMPLER_ARG")
    # The CPUs each worker's span exporter process runs on (a list such as 2,3 or 2-3); unset = the worker's.
    otel_exporter_cpus: str | None = Field(default=None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """A variable set to the empty string counts as unset (`POLYROUTE_REDIS_URL=` from a compose file's
        `${REDIS_URL:-}`), as the OpenTelemetry specification requires of the OTEL_* variables. Except NO_PROXY,
        where empty means what it says: no host bypasses the proxy, not even loopback (README)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != "" or k.lower() == "no_proxy"}
        return data

    @property
    def tracing(self) -> bool:
        """Whether requests are traced: an OTLP endpoint is set and the SDK is not turned off."""
        return bool(self.otel_endpoint) and not self.otel_sdk_disabled and self.otel_traces_exporter == "otlp"

    @field_validator("otel_protocol")
    @classmethod
    def _otel_protocol(cls, value: str) -> str:
        if value not in ("http/protobuf", "grpc"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: expected http/protobuf or grpc, not {value!r}")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str | None) -> str | None:
        return normalize_origins(value)

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return tuple(self.cors_origins.split(",")) if self.cors_origins else ()


def normalize_origins(value: str | None) -> str | None:
    """`POLYROUTE_CORS_ORIGINS` as the comma list a browser's `Origin` header is compared with, or None if empty.

    A browser sends `Origin: https://app.example.com` (lower case, no path, no trailing slash; desktop web views
    send their own schemes, e.g. `tauri://localhost`): an entry written any other way would never match, so it is
    refused at startup instead of failing every browser request.
    """
    origins = [o.strip().lower() for o in (value or "").split(",") if o.strip()]
    if origins == ["*"]:
        return "*"
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if not (sep and scheme.isascii() and scheme[:1].isalpha() and rest) or "/" in rest or "*" in origin:
            raise ValueError(f"{origin!r}: expected scheme://host[:port] (no path, no trailing slash), or * alone")
    return ",".join(origins) or None


def environment() -> Mapping[str, str]:
    """The process environment, for `${VAR}` expansion in policies."""
    return os.environ


def prepare_litellm_environment() -> None:
    """Keep litellm from downloading its price map at import: it must use the copy it ships."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")


def export_for_workers(settings: Settings, multiproc_dir: Path | None) -> None:
    """Worker processes read their settings from the environment: write the resolved ones there."""
    for name in ("policy", "redis_url", "admin_key", "max_body_bytes", "state_failure_mode", "metrics_port",
                 "max_upstream_body_bytes", "max_sse_event_bytes", "cors_origins", "header_timeout_seconds",
                 "body_timeout_seconds", "max_connections", "routing_facts_per_day", "lockin_refresh_seconds", "docs",
                 "state_dir", "otel_capture_content", "otel_exporter_cpus"):
        value = getattr(settings, name)
        if value is not None:
            os.environ[f"POLYROUTE_{name.upper()}"] = str(getattr(value, "value", value))
    if multiproc_dir is not None:
        # prometheus-client picks its multiprocess value class from this variable when first imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
        os.environ["POLYROUTE_MULTIPROC_DIR"] = str(multiproc_dir)
