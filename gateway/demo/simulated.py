"""SIMULATED upstream LLM servers (Model Studio, vLLM, Ollama flavors) on real loopback HTTP, with fault injection."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from aiohttp import web

from gateway.demo.sim_engine import ENGINE_METRICS, SimulatedEngineLoad
from gateway.demo.sim_flavors import FLAVORS
from gateway.demo.sim_images import SimulatedImages
from gateway.demo.sim_server import SimulatedUpstream

_MAX_BODY_BYTES = 64 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SIMULATED_UPSTREAM = web.AppKey("simulated_upstream", SimulatedUpstream)


def create_simulated_app(
    flavor: str,
    *,
    name: str,
    api_key: str | None = None,
    models: Sequence[str] | None = None,
    chunks: int = 20,
    engine_metrics: str | None = None,
    slots: int = 4,
) -> web.Application:
    """A SIMULATED OpenAI-compatible upstream of `flavor` (`modelstudio`, `vllm` or `ollama`); no model runs.

    Replies are deterministic echoes naming `name`, labelled `system_fingerprint: polyroute-simulated`.
    Routes under the flavor's prefix (`/compatible-mode/v1` for modelstudio, `/v1` otherwise):
    `POST chat/completions`, `POST completions`, `POST embeddings`, `GET models`, `POST responses` (OpenAI
    Responses, natively), `POST audio/transcriptions` and `POST audio/speech` (sim_audio.py), and Anthropic
    Messages natively at the flavor's `messages_path` (Model Studio:
    `/apps/anthropic/v1/messages`, else `/v1/messages`); admin routes without auth:
    `POST|DELETE /_sim/faults`, `GET|DELETE /_sim/stats`. Image APIs (sim_images.py): Model Studio's native
    DashScope image API under `/api/v1` (modelstudio), `POST /v1/images/generations|edits` (vllm). With
    `api_key`, the API routes require
    `Authorization: Bearer <api_key>`. With `models` given, other models get the flavor's 404; without, any
    model is served. `chunks` is the number of content frames per streamed reply. Faults (sim_faults.py)
    apply to the POST routes only; a request's `x-sim-fault` header wins over the queued faults.
    """
    if flavor not in FLAVORS:
        raise ValueError(f"unknown simulated flavor {flavor!r}; known: {', '.join(FLAVORS)}")
    upstream = SimulatedUpstream(FLAVORS[flavor], name=name, api_key=api_key, models=models, chunks=chunks)
    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    app[SIMULATED_UPSTREAM] = upstream
    prefix = upstream.flavor.prefix
    routes: Mapping[str, tuple[str, Handler]] = {
        f"{prefix}/chat/completions": ("POST", upstream.chat),
        f"{prefix}/completions": ("POST", upstream.completions),
        f"{prefix}/embeddings": ("POST", upstream.embeddings),
        f"{prefix}/models": ("GET", upstream.list_models),
        f"{prefix}/responses": ("POST", upstream.responses),
        f"{prefix}/audio/transcriptions": ("POST", upstream.transcriptions),
        f"{prefix}/audio/speech": ("POST", upstream.speech),
        upstream.flavor.messages_path: ("POST", upstream.messages),
    }
    for path, (method, handler) in routes.items():
        app.router.add_route(method, path, handler)
    for method, path, handler in SimulatedImages(upstream).routes():  # sim_images.py: Model Studio's, vLLM's
        app.router.add_route(method, path, handler)
    app.router.add_post("/_sim/faults", upstream.post_faults)
    app.router.add_delete("/_sim/faults", upstream.delete_faults)
    app.router.add_get("/_sim/stats", upstream.get_stats)
    if engine_metrics is not None:  # an engine's own /metrics, with values following the requests held
        upstream.engine_load = SimulatedEngineLoad(engine_metrics, slots=slots, model=upstream.models[0])
        app.router.add_get("/metrics", upstream.engine_load.metrics)
    app.router.add_delete("/_sim/stats", upstream.delete_stats)
    return app


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, announcing `READY <url>` on stdout once listening."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=2048)
        await site.start()
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        print(f"READY http://{shown_host}:{bound_port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo.simulated", description="Run a SIMULATED OpenAI-compatible LLM server."
    )
    parser.add_argument("--flavor", required=True, choices=sorted(FLAVORS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed in the READY line)")
    parser.add_argument("--name", default=None, help="shown in every reply (default: sim-<flavor>)")
    parser.add_argument("--api-key", default=None, help="require `Authorization: Bearer <key>`")
    parser.add_argument("--models", default=None, help="comma-separated model ids; others then get a 404")
    parser.add_argument("--chunks", type=int, default=20, help="content frames per streamed reply")
    parser.add_argument(
        "--engine-metrics", choices=ENGINE_METRICS, default=None, help="serve /metrics under this engine's names"
    )
    parser.add_argument("--slots", type=int, default=4, help="requests run at once; more wait (engine metrics)")
    args = parser.parse_args(argv)
    if args.chunks < 1:
        parser.error("--chunks must be at least 1")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    app = create_simulated_app(
        args.flavor,
        name=args.name or f"sim-{args.flavor}",
        api_key=args.api_key,
        models=models,
        chunks=args.chunks,
        engine_metrics=args.engine_metrics,
        slots=args.slots,
    )
    try:
        _run(serve(app, args.host, args.port))
    except OSError as exc:
        print(f"simulated upstream could not start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
