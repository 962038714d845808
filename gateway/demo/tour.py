"""`polyroute demo`: a guided tour against two simulated upstreams on loopback, through the real openai client."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import uvicorn
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam
from starlette.datastructures import Headers

from gateway.api.parsing import parse_request, request_facts
from gateway.demo.simulated import create_simulated_app
from gateway.policy.engine import decide
from gateway.policy.loader import load_policy
from gateway.policy.plan import HealthSnapshot
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable
from gateway.portability.commands import lockin_from_store
from gateway.portability.render import render_lockin, render_shadow
from gateway.providers.base import Endpoint
from gateway.settings import Settings, environment

BANNER = """\
polyroute demo
==============
Two SIMULATED upstreams run on this machine (nothing leaves 127.0.0.1, no API keys are used):
  sim-cloud  behaves like Alibaba Cloud Model Studio (cloud, jurisdiction sg)   -> deployments qwen-plus, qwen-image
  sim-vllm   behaves like a self-hosted vLLM server   (self_hosted, onprem)     -> deployments qwen-local, local-image
polyroute sits in front of both with policies/demo.yaml; the official openai client talks only to polyroute.
"""


def demo_policy_path() -> Path:
    return Path(str(resources.files("gateway.demo").joinpath("demo.yaml")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _start_upstream(flavor: str, name: str) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(create_simulated_app(flavor, name=name), access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def _show(step: str, raw: Any, text: str) -> None:
    h = raw.headers
    print(f"\n--> {step}")
    print(f"    answered by deployment : {h.get('x-polyroute-deployment')}  (route {h.get('x-polyroute-route')})")
    print(f"    attempts               : {h.get('x-polyroute-attempts')}"
          + (f"  fallback reason: {h['x-polyroute-fallback-reason']}" if h.get("x-polyroute-fallback-reason") else ""))
    if h.get("x-polyroute-cost-usd"):
        print(f"    cost                   : ${float(h['x-polyroute-cost-usd']):.6f}")
    print(f"    reply                  : {text[:100]}")


async def run_demo(*, port: int = 0) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("polyroute").setLevel(logging.WARNING)
    print(BANNER)
    cloud, cloud_port = await _start_upstream("modelstudio", "sim-cloud")
    local, local_port = await _start_upstream("vllm", "sim-vllm")
    env: Mapping[str, str] = {
        **environment(),
        "POLYROUTE_DEMO_CLOUD_PORT": str(cloud_port),
        "POLYROUTE_DEMO_LOCAL_PORT": str(local_port),
    }
    table = load_policy(demo_policy_path(), env, fx=CurrencyRates())
    gateway_port = port or _free_port()
    settings = Settings(host="127.0.0.1", port=gateway_port, policy=None, watch_policy=False)

    from gateway.app import create_app

    app = create_app(settings, table=table)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=gateway_port, log_level="warning", access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                return 1
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{gateway_port}"
        print(f"polyroute is listening on {base}/v1\n")
        await _tour(base, cloud_port, table)
        await app.state.runtime.shadow.settled()  # the copy of step 3 has been compared
    finally:
        server.should_exit = True
        await serving
        await cloud.cleanup()
        await local.cleanup()
    # The server has stopped and its accounting has written every usage record: the tour's traffic is all there.
    report = await lockin_from_store(app.state.runtime.store, table, days=1)
    print("\n11. `polyroute lockin`: how locked-in the tour's traffic is (GET /admin/lockin has the same as JSON):")
    for line in render_lockin(report).splitlines():
        print(f"    {line}")
    shadow = app.state.runtime.shadow.results.report("chat")
    print("\n12. `polyroute shadow report`: step 3 was also copied to the other target and the answers compared:")
    for line in render_shadow(shadow).splitlines():
        print(f"    {line}")
    print("\nDemo finished. Next: `polyroute policy check policies/demo.yaml`, or `polyroute serve --policy FILE`.")
    return 0


def _print_trace(table: PolicyTable, body: dict[str, Any], headers: dict[str, str]) -> None:
    """The engine's decision trace for a request: the same code `polyroute route explain` runs."""
    parsed = parse_request(orjson.dumps(body), Endpoint.CHAT, Headers(headers))
    tenant = table.anonymous_tenant()
    assert tenant is not None
    plan = decide(request_facts(parsed, tenant), table, HealthSnapshot())
    for line in plan.trace:
        print(f"    trace: {line}")


async def _tour(base: str, cloud_port: int, table: PolicyTable) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="demo-no-key-needed", max_retries=0)
    models = await client.models.list()
    print("1. GET /v1/models lists the aliases clients may send as `model`:", ", ".join(m.id for m in models.data))

    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Write a haiku about routers."}]
    raw = await client.chat.completions.with_raw_response.create(model="coder", messages=hello)
    _show("2. model=coder (strategy priority: Model Studio first)", raw, raw.parse().choices[0].message.content or "")

    raw = await client.chat.completions.with_raw_response.create(model="chat", messages=hello)
    _show("3. model=chat (strategy lowest_cost: the cheapest eligible target)", raw,
          raw.parse().choices[0].message.content or "")

    secret: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Summarise the patient record of Jane Doe."}
    ]
    raw = await client.chat.completions.with_raw_response.create(
        model="coder", messages=secret, extra_headers={"x-polyroute-data-class": "pii"}
    )
    _show("4. model=coder with x-polyroute-data-class: pii (rule pii-stays-home: never leaves self-hosted)",
          raw, raw.parse().choices[0].message.content or "")
    _print_trace(table, {"model": "coder", "messages": secret}, {"x-polyroute-data-class": "pii"})

    async with aiohttp.ClientSession() as http:
        faults = {"faults": [{"fault": "throttling", "count": -1}]}
        async with http.post(f"http://127.0.0.1:{cloud_port}/_sim/faults", json=faults) as resp:
            resp.raise_for_status()
        print("\n   (the simulated Model Studio now answers every request with 429 Throttling.RateQuota)")
        raw = await client.chat.completions.with_raw_response.create(model="coder", messages=hello)
        _show("5. model=coder while the cloud throttles: polyroute falls back to the self-hosted target",
              raw, raw.parse().choices[0].message.content or "")

        print("\n--> 6. streaming through the fallback (SSE relayed chunk by chunk):")
        stream = await client.chat.completions.create(model="coder", messages=hello, stream=True)
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        print(f"    {len(pieces)} chunks: {''.join(pieces)[:100]}")
        async with http.delete(f"http://127.0.0.1:{cloud_port}/_sim/faults") as resp:
            resp.raise_for_status()

        async with http.post(f"http://127.0.0.1:{cloud_port}/_sim/faults",
                             json={"faults": [{"fault": "arrearage", "count": 1}]}) as resp:
            resp.raise_for_status()
        print("\n   (the simulated Model Studio now answers 400 Arrearage: the cloud account is overdue)")
        raw = await client.chat.completions.with_raw_response.create(model="coder", messages=hello)
        _show("7. model=coder with the cloud account in arrears: no retry, the self-hosted target answers, and the"
              " cloud's circuit opens for its cooldown", raw, raw.parse().choices[0].message.content or "")
        raw = await client.chat.completions.with_raw_response.create(model="coder", messages=hello)
        _show("8. model=coder again: the open circuit keeps requests off the cloud until the cooldown ends",
              raw, raw.parse().choices[0].message.content or "")

        async with http.post(f"http://127.0.0.1:{cloud_port}/_sim/faults",
                             json={"faults": [{"fault": "task_failed", "model": "qwen-image-plus"}]}) as resp:
            resp.raise_for_status()
        print("\n   (the simulated Model Studio's next image task ends FAILED after PENDING and RUNNING)")
        raw_image = await client.images.with_raw_response.generate(model="paint", prompt="a lighthouse at dusk")
        images = raw_image.parse().data or []
        _show("9. images.generate with model=paint: the cloud image task failed, the self-hosted image server"
              " answers", raw_image, f"{len(images)} image(s): {images[0].url if images else ''}")

        async with http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    wanted = ("polyroute_requests_total{", "polyroute_fallbacks_total{", "polyroute_cost_usd_total{",
              "polyroute_circuit_open{", "polyroute_images_total{")
    print("\n10. a few lines of GET /metrics (Prometheus):")
    for line in metrics.splitlines():
        if line.startswith(wanted):
            print(f"    {line}")
