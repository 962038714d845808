"""The `polyroute` command: serve, demo, policy check, route explain, usage, lockin, drill, what-if, shadow."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from gateway.errors import PolicyError, PolyrouteError
from gateway.settings import Settings, export_for_workers

if TYPE_CHECKING:
    from gateway.policy.table import PolicyTable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polyroute", description="OpenAI-compatible LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--policy", type=Path, help="policy file or directory (default: $POLYROUTE_POLICY)")
    serve.add_argument("--host", help="bind address (default: $POLYROUTE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $POLYROUTE_PORT or 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default: $POLYROUTE_WORKERS or 1)")

    demo = sub.add_parser("demo", help="a guided tour against simulated local upstreams (no keys, no Redis)")
    demo.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")

    policy = sub.add_parser("policy", help="policy tools")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy and print the resolved table")
    check.add_argument("file", type=Path)

    route = sub.add_parser("route", help="routing tools")
    route_sub = route.add_subparsers(dest="route_command", required=True)
    explain = route_sub.add_parser("explain", help="show how a request body would be routed")
    explain.add_argument("file", type=Path, help="policy file or directory")
    explain.add_argument("--request", type=Path, required=True, help="request body JSON file ('-' for stdin)")
    explain.add_argument("--tenant", help="route as this tenant")
    explain.add_argument("--endpoint", choices=["chat", "completion", "embedding", "image", "transcription", "speech"],
                         default="chat", help="transcription: the body is a JSON object of the upload's text fields")
    explain.add_argument("--header", action="append", default=[], metavar="K=V", help="a request header")

    usage = sub.add_parser(
        "usage",
        help="usage, cost and each vendor's share from the state store",
        description="Requests, tokens and cost per group, and each vendor's and hosting type's share of requests "
        "and spend. Read from Redis when POLYROUTE_REDIS_URL is set, else from the running gateway's "
        "/admin/usage (POLYROUTE_HOST/POLYROUTE_PORT or --url, with POLYROUTE_ADMIN_KEY).",
    )
    usage.add_argument("--days", type=int, default=1, help="the last N UTC days, today included (default: 1)")
    usage.add_argument(
        "--group-by",
        default="tenant,alias,deployment,vendor",
        help="comma list of day, tenant, alias, deployment, provider, vendor, hosting, jurisdiction",
    )
    usage.add_argument("--url", help="ask this gateway's /admin/usage instead of the store")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")

    lockin = sub.add_parser(
        "lockin",
        help="how locked-in the traffic is: vendor shares, concentration, aliases that cannot leave their vendor",
        description="Each vendor's, jurisdiction's and hosting type's share of requests, tokens and spend, vendor "
        "concentration (HHI), and per alias whether the current rules let its recorded traffic go to another vendor "
        "or a self-hosted target, and which provider-specific parameters it sends. Same sources as `usage` (with "
        "POLYROUTE_REDIS_URL, the policy comes from POLYROUTE_POLICY).",
    )
    lockin.add_argument("--days", type=int, default=7, help="the last N UTC days, today included (default: 7)")
    lockin.add_argument("--url", help="ask this gateway's /admin/lockin instead of the store")
    lockin.add_argument("--json", action="store_true", help="print JSON instead of text")

    drill = sub.add_parser(
        "drill",
        help="replay recorded traffic as if a vendor were gone; fails when a critical alias loses traffic",
        description="Replays the recorded routing facts through the routing engine with every deployment of the "
        "vendor removed: per alias, the requests refused and the rules that refuse them, where the rest go, and "
        "the cost and latency change. Exits with status 3 when an alias marked `critical: true` would lose more "
        "than --max-stranded of its traffic.",
    )
    drill.add_argument("--without", required=True, metavar="VENDOR", help="the vendor to remove")
    drill.add_argument("--days", type=int, default=7, help="the last N UTC days, today included (default: 7)")
    drill.add_argument("--url", help="ask this gateway's /admin/drill instead of the store")
    drill.add_argument("--json", action="store_true", help="print JSON instead of text")
    drill.add_argument(
        "--max-stranded", type=float, default=0.0, help="share of a critical alias's traffic it may lose (default: 0)"
    )

    shadow = sub.add_parser(
        "shadow",
        help="shadow evaluation: how other deployments answered copies of sampled requests",
        description="Per alias and shadow target (the alias's `shadow:` in the policy): copies compared, dropped "
        "(budget, concurrency), excluded by the request's rules, failed; agreement with the primary's answers, "
        "latency and cost. Results are kept in the gateway's memory: asked of the gateway at --url (default: "
        "POLYROUTE_HOST/PORT).",
    )
    shadow.add_argument("action", choices=["report"], help="report: print the results so far")
    shadow.add_argument("--alias", help="only this alias")
    shadow.add_argument("--url", help="the gateway to ask (its /admin/shadow)")
    shadow.add_argument("--json", action="store_true", help="print JSON instead of text")

    whatif = sub.add_parser(
        "what-if",
        help="recorded usage priced (and, with routing facts, routed) under another policy: spend then vs now",
        description="Recomputes the recorded usage of the last --days under the prices of --policy (the price "
        "entry in force today, tiers and cache prices included) and, when routing facts were recorded, replays them "
        "through its routing too; prints spend per alias and vendor, as recorded (then) and under the policy (now). "
        "Usage comes from --url, else from POLYROUTE_REDIS_URL, else from the gateway on POLYROUTE_HOST/PORT.",
    )
    whatif.add_argument("--policy", required=True, type=Path, help="the policy file whose prices and routing to use")
    whatif.add_argument("--days", type=int, default=7, help="the last N UTC days, today included (default: 7)")
    whatif.add_argument("--url", help="read the recorded usage from this gateway's /admin/recorded")
    whatif.add_argument("--json", action="store_true", help="print JSON instead of text")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            from gateway.demo.tour import run_demo

            return asyncio.run(run_demo(port=args.port))
        if args.command == "policy":
            return _policy_check(args.file)
        if args.command == "route":
            return _route_explain(args)
        if args.command in ("lockin", "drill", "what-if", "shadow"):
            return _portability(args)
        from gateway.observability.usage_cli import run_usage

        return asyncio.run(run_usage(Settings(), args.days, args.group_by, args.url, args.json))
    except PolicyError as err:
        print(f"error: {err.message}", file=sys.stderr)
        for problem in err.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    except PolyrouteError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1


def _portability(args: argparse.Namespace) -> int:
    from gateway.portability.commands import run_drill, run_lockin, run_shadow, run_whatif

    if args.command == "shadow":
        return asyncio.run(run_shadow(Settings(), args.alias, args.url, args.json))
    if args.command == "what-if":
        return asyncio.run(run_whatif(Settings(), args.policy, args.days, args.url, args.json))
    if args.command == "lockin":
        return asyncio.run(run_lockin(Settings(), args.days, args.url, args.json))
    return asyncio.run(run_drill(Settings(), args.without, args.days, args.url, args.json, args.max_stranded))


def _serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k in ("policy", "host", "port", "workers") if (v := getattr(args, k)) is not None}
    settings = Settings(**overrides)
    if settings.policy is None:
        raise PolicyError(["no policy given: pass --policy FILE or set POLYROUTE_POLICY"], "serve")
    own_multiproc_dir = settings.workers > 1 and settings.multiproc_dir is None
    own_state_dir = settings.workers > 1 and settings.redis_url is None and settings.state_dir is None
    if own_state_dir:  # the workers share limits, budgets and usage in a database there (gateway/state/sqlite.py)
        overrides["state_dir"] = Path(tempfile.mkdtemp(prefix="polyroute-state-"))
        settings = Settings(**overrides)
    if settings.workers > 1:
        # Before anything imports prometheus_client: workers share one metrics directory.
        multiproc = settings.multiproc_dir or Path(tempfile.mkdtemp(prefix="polyroute-metrics-"))
        export_for_workers(settings, multiproc)
        settings = Settings(**overrides)
    import uvicorn

    from gateway.providers.upstream_proxy import proxies_for
    from gateway.runtime import load_table

    assert settings.policy is not None
    load_table(settings, settings.policy)  # fail fast, with every problem listed, before binding
    try:
        proxies_for(http_proxy=settings.http_proxy, https_proxy=settings.https_proxy, no_proxy=settings.no_proxy)
    except ValueError as err:
        raise PolicyError([str(err)], "environment") from None
    if settings.workers > 1:
        from gateway.observability.multiprocess import prepare_multiprocess_dir, serve_multiprocess_metrics

        assert settings.multiproc_dir is not None
        prepare_multiprocess_dir(settings.multiproc_dir)
        if settings.redis_url is None:
            logging.getLogger("polyroute").info(
                "%d workers share limits, budgets and usage in %s (no POLYROUTE_REDIS_URL); circuit breakers are "
                "per worker",
                settings.workers,
                settings.state_dir,
            )
        if settings.metrics_port is not None:
            serve_multiprocess_metrics(settings.metrics_port, settings.host, settings.multiproc_dir)
        try:
            uvicorn.run(
                "gateway.app:app_from_environment",
                factory=True,
                workers=settings.workers,
                host=settings.host,
                port=settings.port,
                loop=_loop(),
                http=_http(settings),
                log_level=settings.log_level,
                access_log=False,
                proxy_headers=False,  # nothing reads the client address or scheme: no per-request rewrite
                timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
            )
        finally:
            if own_multiproc_dir:
                shutil.rmtree(settings.multiproc_dir, ignore_errors=True)
            if own_state_dir and settings.state_dir is not None:
                shutil.rmtree(settings.state_dir, ignore_errors=True)
        return 0

    from gateway.app import create_app, create_metrics_app

    app = create_app(settings)
    servers = [uvicorn.Server(_uvicorn_config(app, settings, settings.port))]
    if settings.metrics_port is not None:
        servers.append(uvicorn.Server(_uvicorn_config(create_metrics_app(app), settings, settings.metrics_port)))

    async def run_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    # uvicorn handles SIGTERM (stop accepting, drain) and then raises it again for the handler found before it
    # started: make that one a clean exit, so a drained shutdown ends with status 0, not "killed by SIGTERM".
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # Server.serve() does not install uvicorn's event loop (only uvicorn.run does): choose it here.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run_all())
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _uvicorn_config(app: Any, settings: Settings, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        loop=_loop(),
        http=_http(settings),
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,  # nothing reads the client address or scheme: no per-request rewrite
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )


def _loop() -> str:
    return "uvloop" if _has("uvloop") else "asyncio"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not _has("uvloop"):
        return None
    import uvloop

    return uvloop.new_event_loop


def _http(settings: Settings) -> Any:
    """uvicorn's httptools protocol with polyroute's header and body timeouts and connection bound."""
    from gateway.api.server_protocol import ConnectionLimits, bounded_protocol

    return bounded_protocol(ConnectionLimits.from_settings(settings))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _policy_check(path: Path) -> int:
    from gateway.policy.loader import describe_policy
    from gateway.policy.retirement import retirement_notes
    from gateway.runtime import load_table

    table = load_table(Settings(), path)
    print(describe_policy(table))
    notes = retirement_notes(table, datetime.now(UTC).date())
    for note in notes:
        print(f"{'error' if note.failed else 'warning'}: {note.message}", file=sys.stderr)
    if any(note.failed for note in notes):
        print(f"\nFAILED: {path} routes to a retired model.")
        return 1
    print(f"\nOK: {path} is a valid policy.")
    return 0


def _route_explain(args: argparse.Namespace) -> int:
    from starlette.datastructures import Headers

    from gateway.api.audio_parsing import explained_request
    from gateway.api.parsing import request_facts
    from gateway.policy.engine import decide
    from gateway.policy.plan import HealthSnapshot
    from gateway.providers.base import Endpoint
    from gateway.providers.images import capable_plan
    from gateway.runtime import load_table

    table = load_table(Settings(), args.file)
    raw = sys.stdin.buffer.read() if str(args.request) == "-" else args.request.read_bytes()
    pairs: list[tuple[str, str]] = []
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --header takes K=V, got {item!r}", file=sys.stderr)
            return 2
        pairs.append((key.strip().lower(), value.strip()))
    headers = Headers(raw=[(k.encode(), v.encode()) for k, v in pairs])
    tenant = table.tenants.get(args.tenant) if args.tenant else table.anonymous_tenant()
    if tenant is None:
        known = ", ".join(sorted(table.tenants)) or "none"
        print(f"error: unknown tenant {args.tenant!r} (tenants: {known}); pass --tenant", file=sys.stderr)
        return 2
    endpoint = Endpoint(args.endpoint)
    try:
        parsed = explained_request(raw, endpoint, headers)
        plan = decide(request_facts(parsed, tenant), table,
                      HealthSnapshot(open_circuits=_shared_open_circuits(table), random_seed=0.0))
        if endpoint is Endpoint.IMAGE:
            plan = capable_plan(plan, endpoint, parsed.body)
    except PolyrouteError as err:
        print(f"decision: rejected with HTTP {err.status}: {err.message}")
        return 1
    print(plan.render())
    for unsupported in (e for e in plan.excluded if e.reason.startswith("option ")):
        print(f"excluded: {unsupported.deployment} ({unsupported.reason})")
    print(f"decision: route={plan.route} attempts={' > '.join(d.name for d in plan.attempts)}")
    if plan.estimated_cost_usd:
        costs = ", ".join(f"{k}=${v:.6f}" for k, v in plan.estimated_cost_usd.items())
        print(f"estimated cost: {costs}")
    return 0

def _shared_open_circuits(table: PolicyTable) -> frozenset[str]:
    """Open circuits as every gateway sharing POLYROUTE_REDIS_URL sees them; none without it (a server's
    in-process circuits are visible only through its own POST /admin/routes/explain)."""
    settings = Settings()
    if settings.redis_url is None:
        return frozenset()
    import time

    from gateway.routing.health import open_circuits
    from gateway.state.factory import create_state_store

    async def read() -> frozenset[str]:
        store = create_state_store(settings, on_error=lambda _op: None)
        await store.start()
        try:
            return await open_circuits(store, tuple(table.deployments), time.time())
        finally:
            await store.close()

    return asyncio.run(read())


if __name__ == "__main__":
    sys.exit(main())
