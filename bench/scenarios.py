"""What is benchmarked: the upstream (the floor), the baselines, and polyroute with the in-process store and Redis."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procs import HOST, cores

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LITELLM_VENV = BENCH / ".venv-litellm"
TENANT_KEY = "bench-tenant-key-0123456789"
MODEL = "bench-model"
LITELLM_KEY = "sk-bench-master-key-0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Context:
    """What every scenario's command may need: where the upstream and Redis listen, where to write files."""

    upstream_url: str
    redis_url: str | None
    work_dir: Path


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    model: str = MODEL
    key: str = ""
    # None: send load straight to the upstream (no gateway process).
    command: Callable[[Context, int], tuple[list[str], dict[str, str]]] | None = None
    needs_redis: bool = False
    is_polyroute: bool = False


def _passthrough(ctx: Context, port: int) -> tuple[list[str], dict[str, str]]:
    argv = [
        sys.executable, "-m", "uvicorn", "bench.passthrough:app", "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]
    return argv, {"BENCH_UPSTREAM": ctx.upstream_url, "PYTHONPATH": str(REPO)}


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def _nginx(ctx: Context, port: int) -> tuple[list[str], dict[str, str]]:
    """nginx as a plain reverse proxy (one worker, keep-alive to the upstream, streams not buffered): what a proxy
    hop written in C costs on this machine, the floor under every gateway's added latency and CPU per chunk."""
    binary = _nginx_binary()
    if binary is None:
        raise OSError("nginx is not installed (bench/run installs it with apt-get)")
    prefix = ctx.work_dir / f"nginx-{port}"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    upstream = ctx.upstream_url.removeprefix("http://")
    (prefix / "nginx.conf").write_text(
        "worker_processes 1;\n"
        "daemon off;\n"
        "worker_rlimit_nofile 16384;\n"
        "error_log logs/error.log warn;\n"
        "pid logs/nginx.pid;\n"
        "events { worker_connections 8192; }\n"
        "http {\n"
        "  access_log off;\n"
        "  client_max_body_size 0;\n"
        "  client_body_buffer_size 4m;\n"  # the 1 MiB bodies stay in memory, as in every other gateway
        "  client_body_temp_path tmp/body;\n"
        "  proxy_temp_path tmp/proxy;\n"
        f"  upstream bench {{ server {upstream}; keepalive 256; }}\n"
        "  server {\n"
        f"    listen {HOST}:{port};\n"
        "    location / {\n"
        "      proxy_pass http://bench;\n"
        "      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        "      proxy_buffering off;\n"  # streamed answers are relayed as they arrive
        "    }\n"
        "  }\n"
        "}\n"
    )
    (prefix / "tmp").mkdir(exist_ok=True)
    return [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], {}


def _litellm(ctx: Context, port: int) -> tuple[list[str], dict[str, str]]:
    config = ctx.work_dir / "litellm-config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {ctx.upstream_url}/v1\n"
        "      api_key: bench-upstream-key\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"  # no database: the master key is the only key, checked on every request
        f"  master_key: {LITELLM_KEY}\n"
    )
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", HOST, "--port", str(port),
            "--num_workers", "1"]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MODE": "PRODUCTION",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    return argv, env


def _polyroute(ctx: Context, port: int) -> tuple[list[str], dict[str, str]]:
    argv = [
        str(Path(sys.executable).with_name("polyroute")), "serve", "--policy", str(BENCH / "policy.yaml"),
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]
    env = {
        "BENCH_UPSTREAM_URL": ctx.upstream_url,
        "BENCH_TENANT_KEY": TENANT_KEY,
        "POLYROUTE_LOG_LEVEL": "warning",
    }
    if ctx.redis_url is not None:
        env["POLYROUTE_REDIS_URL"] = ctx.redis_url
    return argv, env


def _polyroute_sqlite(ctx: Context, port: int, name: str = "polyroute-state") -> tuple[list[str], dict[str, str]]:
    # One worker on the store `--workers N` shares without Redis: the store's own cost, apart from the workers'.
    argv, env = _polyroute(ctx, port)
    state_dir = ctx.work_dir / name
    state_dir.mkdir(parents=True, exist_ok=True)
    return argv, {**env, "POLYROUTE_STATE_DIR": str(state_dir)}


def _polyroute_traced(ctx: Context, port: int) -> tuple[list[str], dict[str, str]]:
    """polyroute with every request traced: the spans go over OTLP/HTTP to the bench upstream, which answers 404
    (exporting costs what it costs against a collector: encoding and one POST per batch; no collector to run). The
    span exporter process runs on the client core (POLYROUTE_OTEL_EXPORTER_CPUS), as it would on another core of a
    machine where the gateway had one to itself; its CPU is counted in the gateway's and reported apart too."""
    argv, env = _traced(ctx, port)
    client_core, _ = cores()
    if client_core is not None:
        env["POLYROUTE_OTEL_EXPORTER_CPUS"] = client_core
    return argv, env


def _traced(ctx: Context, port: int) -> tuple[list[str], dict[str, str]]:
    """Traced, the span exporter process on the gateway's own core (where `serve` pinned by taskset puts it)."""
    argv, env = _polyroute(ctx, port)
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": ctx.upstream_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "always_on",
    })
    return argv, env


def _polyroute_two_workers(ctx: Context, port: int) -> tuple[list[str], dict[str, str]]:
    # The store `serve --workers 2` would create in a temporary directory, in a directory of the bench's own, like
    # polyroute-sqlite's: the two scenarios differ only in the number of workers.
    argv, env = _polyroute_sqlite(ctx, port, "polyroute-2w-state")
    argv[argv.index("--workers") + 1] = "2"
    return argv, env


DIRECT = Scenario("direct", "direct to the upstream (floor)")
PASSTHROUGH = Scenario("passthrough", "FastAPI + aiohttp pass-through", command=_passthrough)
NGINX = Scenario("nginx", "nginx reverse proxy (C; a proxy hop's own cost)", command=_nginx)
LITELLM = Scenario("litellm", "LiteLLM proxy 1.106.2", key=LITELLM_KEY, command=_litellm)
POLYROUTE = Scenario(
    "polyroute", "polyroute, full pipeline, in-process store", model="bench", key=TENANT_KEY,
    command=_polyroute, is_polyroute=True,
)
POLYROUTE_REDIS = Scenario(
    "polyroute-redis", "polyroute, full pipeline, Redis store", model="bench", key=TENANT_KEY,
    command=_polyroute, needs_redis=True, is_polyroute=True,
)
POLYROUTE_SQLITE = Scenario(
    "polyroute-sqlite", "polyroute, full pipeline, SQLite store (what workers share)", model="bench", key=TENANT_KEY,
    command=_polyroute_sqlite, is_polyroute=True,
)
# Shadow evaluation on (sample 0.1, see bench/policy.yaml): primary-path throughput should stay >= 0.9x polyroute's.
POLYROUTE_SHADOW = Scenario(
    "polyroute-shadow", "polyroute, full pipeline, shadow sample 0.1", model="bench-shadow", key=TENANT_KEY,
    command=_polyroute, is_polyroute=True,
)
POLYROUTE_TRACED = Scenario(
    "polyroute-traced", "polyroute, full pipeline, in-process store, 100% of requests traced (OTLP)", model="bench",
    key=TENANT_KEY, command=_polyroute_traced, is_polyroute=True,
)
POLYROUTE_TRACED_ONE_CORE = Scenario(
    "polyroute-traced-1core", "polyroute, 100% traced, the span exporter process on the gateway's core",
    model="bench", key=TENANT_KEY, command=_traced, is_polyroute=True,
)
# Two workers on the one gateway core, sharing the SQLite store (no Redis): CPU per request must not rise over
# polyroute-sqlite's, one worker on that store (req/s cannot show scaling here).
POLYROUTE_2W = Scenario(
    "polyroute-2w", "polyroute, full pipeline, --workers 2 sharing the SQLite store", model="bench", key=TENANT_KEY,
    command=_polyroute_two_workers, is_polyroute=True,
)
ALL = (
    DIRECT,
    NGINX,
    PASSTHROUGH,
    LITELLM,
    POLYROUTE,
    POLYROUTE_SQLITE,
    POLYROUTE_REDIS,
    POLYROUTE_SHADOW,
    POLYROUTE_TRACED,
    POLYROUTE_TRACED_ONE_CORE,
    POLYROUTE_2W,
)
