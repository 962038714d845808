"""CORS for browser apps: a real headless Chromium on another loopback origin calls polyroute with fetch (chat,
streamed chat, SDK headers, errors), an origin not in POLYROUTE_CORS_ORIGINS is refused by the browser, and every
/v1 route answers its preflight."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import PageServer, chromium_binary, load_page
from tests.support.processes import GatewayProcess, start_gateway
from tests.support.stack import Stack

PAGE = (Path(__file__).resolve().parents[1] / "support" / "cors_page.html").read_bytes()
KEY = "sk-web-page"
LIMITED_PAGE_KEY = "sk-web-limited-page"
LIMITED_HTTP_KEY = "sk-web-limited-http"
STRANGER = "http://127.0.0.1:9"  # an origin not in the list (nothing is served there; only its name matters)
EXPOSED = {
    "x-polyroute-route",
    "x-polyroute-deployment",
    "x-polyroute-attempts",
    "x-polyroute-fallback-reason",
    "x-polyroute-cost-usd",
    "x-request-id",
    "retry-after",
}
V1_ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/responses"),
]
# What the OpenAI and Anthropic JS SDKs and a polyroute-aware page send from a browser.
SDK_HEADERS = (
    "anthropic-beta,anthropic-dangerous-direct-browser-access,anthropic-version,authorization,content-type,"
    "x-api-key,x-polyroute-data-class,x-polyroute-tags,x-stainless-arch,x-stainless-lang,x-stainless-os,"
    "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,x-stainless-timeout"
)

POLICY = """
version: 1
providers:
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, context_window: 32768}}
  embed-local: {{provider: vllm, model: bge-m3}}
aliases:
  chat: {{targets: [qwen-local], strategy: priority}}
  embed: {{targets: [embed-local], strategy: priority}}
fallback:
  on: [rate_limit, timeout, server_error, connection_error]
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
  timeouts: {{connect: 2s, first_token: 5s, total: 20s}}
tenants:
  web: {{api_keys: ["{key}"]}}
  web-limited-page: {{api_keys: ["{limited_page}"], limits: {{rpm: 1}}}}
  web-limited-http: {{api_keys: ["{limited_http}"], limits: {{rpm: 1}}}}
"""


@dataclass
class CorsStack:
    gateway: GatewayProcess  # POLYROUTE_CORS_ORIGINS = the allowed page's origin
    wildcard: GatewayProcess  # POLYROUTE_CORS_ORIGINS = *, two workers
    page: PageServer  # its origin is in the list
    stranger_page: PageServer  # its origin is not
    stack: Stack


@pytest.fixture(scope="module")
def cors(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorsStack]:
    policy = tmp_path_factory.mktemp("cors") / "policy.yaml"
    policy.write_text(
        POLICY.format(vllm=stack.vllm.base_url, key=KEY, limited_page=LIMITED_PAGE_KEY, limited_http=LIMITED_HTTP_KEY)
    )
    with PageServer(PAGE) as page, PageServer(PAGE) as stranger_page:
        # Written the way people write it: spaces, upper case; polyroute compares it as a browser sends it.
        origins = f" {page.origin.replace('http://', 'HTTP://')} , https://app.example.com"
        with (
            start_gateway(policy, env={"POLYROUTE_CORS_ORIGINS": origins}) as gateway,
            start_gateway(policy, env={"POLYROUTE_CORS_ORIGINS": "*"}, workers=2) as wildcard,
        ):
            yield CorsStack(gateway, wildcard, page, stranger_page, stack)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20.0) as client:
        yield client


def need_chromium() -> None:
    if chromium_binary() is None:
        pytest.fail("chromium is not installed: run ./scripts/setup --test")


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def listed(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **extra}


# --- a real browser --------------------------------------------------------------------------------------------------


def test_page_on_an_allowed_origin_chats_streams_and_reads_polyroute_headers_and_errors(
    cors: CorsStack, tmp_path: Path
) -> None:
    need_chromium()
    url = cors.page.url(gateway=cors.gateway.base_url, key=KEY, limited_key=LIMITED_PAGE_KEY)
    report = load_page(cors.page, url, tmp_path / "profile")

    assert report["origin"] == cors.page.origin
    chat, stream = report["chat"], report["stream"]
    assert chat["status"] == 200 and chat["content"] == "[sim-vllm] echo: hello from a page"
    assert chat["headers"]["x-polyroute-deployment"] == "qwen-local"
    assert chat["headers"]["x-polyroute-attempts"] == "1" and chat["headers"]["x-request-id"]
    assert stream["status"] == 200 and stream["done"] is True
    assert stream["text"] == chat["content"] and stream["chunks"] > 3
    assert stream["headers"]["x-polyroute-deployment"] == "qwen-local"
    # authorization + x-stainless-* + x-polyroute-tags: the browser asked in a preflight and was allowed.
    sdk = report["sdk_headers"]
    assert sdk["status"] == 200 and sdk["headers"]["x-polyroute-deployment"] == "qwen-local"
    assert report["models"]["status"] == 200 and sorted(report["models"]["ids"]) == ["chat", "embed"]
    # Errors are readable too: status, envelope and Retry-After.
    assert report["bad_key"] == {"status": 401, "type": "authentication_error"}
    assert report["unknown_model"]["status"] == 404 and "no-such-alias" in report["unknown_model"]["message"]
    limited = report["rate_limited"]
    assert limited["statuses"] == [200, 429] and limited["type"] == "rate_limit_error"
    assert int(limited["retry_after"]) >= 1


def test_page_on_an_origin_not_in_the_list_cannot_call_polyroute(cors: CorsStack, tmp_path: Path) -> None:
    need_chromium()
    url = cors.stranger_page.url(gateway=cors.gateway.base_url, key=KEY, limited_key=LIMITED_PAGE_KEY)
    report = load_page(cors.stranger_page, url, tmp_path / "profile")

    assert report["origin"] == cors.stranger_page.origin
    for scenario in ("chat", "stream", "sdk_headers", "models", "bad_key", "unknown_model", "rate_limited"):
        assert report[scenario] == {"fetch_error": "TypeError: Failed to fetch"}, scenario


# --- preflights ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_preflight_is_answered_on_every_v1_route(cors: CorsStack, http: httpx.Client, method: str, path: str) -> None:
    origin = cors.page.origin
    asked = {"origin": origin, "access-control-request-method": method, "access-control-request-headers": SDK_HEADERS}
    response = http.options(cors.gateway.url(path), headers=asked)

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert method.lower() in listed(response.headers["access-control-allow-methods"])
    assert listed(SDK_HEADERS) <= listed(response.headers["access-control-allow-headers"])
    assert "access-control-allow-credentials" not in response.headers
    assert int(response.headers["access-control-max-age"]) > 0


def test_preflight_refuses_an_origin_or_header_not_allowed(cors: CorsStack, http: httpx.Client) -> None:
    url = cors.gateway.url("/v1/chat/completions")
    stranger = {
        "origin": STRANGER,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization",
    }
    refused = http.options(url, headers=stranger)
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers

    odd_header = {
        "origin": cors.page.origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,x-stainless-os,x-unknown-header",
    }
    refused = http.options(url, headers=odd_header)
    assert refused.status_code == 400 and "headers" in refused.text


def test_wildcard_answers_any_origin_without_credentials(cors: CorsStack) -> None:
    asked = {"origin": STRANGER, "access-control-request-method": "POST", "access-control-request-headers": SDK_HEADERS}
    for _ in range(4):  # on new connections: any of the two workers may answer
        with httpx.Client(timeout=20.0) as fresh:
            preflight = fresh.options(cors.wildcard.url("/v1/chat/completions"), headers=asked)
            reply = fresh.post(
                cors.wildcard.url("/v1/chat/completions"),
                json=chat_body(),
                headers={"origin": STRANGER, "authorization": f"Bearer {KEY}"},
            )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in {*preflight.headers, *reply.headers}


# --- responses -------------------------------------------------------------------------------------------------------


def test_replies_streams_and_errors_carry_cors_headers_for_an_allowed_origin(
    cors: CorsStack, http: httpx.Client
) -> None:
    origin = cors.page.origin
    url = cors.gateway.url("/v1/chat/completions")
    ok = {"origin": origin, "authorization": f"Bearer {KEY}"}

    reply = http.post(url, json=chat_body(), headers=ok)
    with http.stream("POST", url, json=chat_body(stream=True), headers=ok) as streamed:
        events = [line for line in streamed.iter_lines() if line]
    bad_key = http.post(url, json=chat_body(), headers={"origin": origin, "authorization": "Bearer nope"})
    unknown = http.post(url, json=chat_body(model="nope"), headers=ok)
    limited_headers = {"origin": origin, "authorization": f"Bearer {LIMITED_HTTP_KEY}"}
    limited = [http.post(url, json=chat_body(), headers=limited_headers) for _ in range(2)]
    cors.stack.vllm.inject([{"fault": "internal", "count": 1, "model": "Qwen/Qwen3-32B"}])
    failed = http.post(url, json=chat_body(), headers=ok)
    models = http.get(cors.gateway.url("/v1/models"), headers=ok)

    assert reply.status_code == 200 and streamed.status_code == 200 and events[-1] == "data: [DONE]"
    assert bad_key.status_code == 401 and unknown.status_code == 404
    assert [r.status_code for r in limited] == [200, 429] and limited[1].headers["retry-after"]
    assert failed.status_code >= 500 and failed.json()["error"]["message"]
    for response in (reply, streamed, bad_key, unknown, limited[1], failed, models):
        assert response.headers["access-control-allow-origin"] == origin, response.request.url
        assert listed(response.headers["access-control-expose-headers"]) == EXPOSED
        assert "origin" in listed(response.headers.get("vary"))


def test_an_origin_not_in_the_list_gets_no_cors_headers(cors: CorsStack, http: httpx.Client) -> None:
    reply = http.post(
        cors.gateway.url("/v1/chat/completions"),
        json=chat_body(),
        headers={"origin": STRANGER, "authorization": f"Bearer {KEY}"},
    )
    assert reply.status_code == 200  # served (a browser would hide it from the page), but without CORS headers
    assert cors_headers(reply) == {} and "origin" in listed(reply.headers.get("vary"))


def test_routes_outside_v1_get_no_cors_headers(cors: CorsStack, http: httpx.Client) -> None:
    health = http.get(cors.gateway.url("/healthz"), headers={"origin": cors.page.origin})
    preflight = http.options(
        cors.gateway.url("/metrics"), headers={"origin": cors.page.origin, "access-control-request-method": "GET"}
    )
    assert health.status_code == 200 and cors_headers(health) == {}
    assert preflight.status_code != 200 and cors_headers(preflight) == {}


def test_without_the_setting_there_are_no_cors_headers(stack: Stack, http: httpx.Client) -> None:
    origin = "http://127.0.0.1:3000"
    reply = http.post(
        stack.gateway.url("/v1/chat/completions"), json=chat_body(model="conf-openai"), headers={"origin": origin}
    )
    preflight = http.options(
        stack.gateway.url("/v1/chat/completions"), headers={"origin": origin, "access-control-request-method": "POST"}
    )
    assert reply.status_code == 200 and cors_headers(reply) == {}
    assert preflight.status_code == 405 and cors_headers(preflight) == {}


def test_an_origin_written_with_a_path_stops_the_gateway_at_startup(cors: CorsStack, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(vllm=cors.stack.vllm.base_url, key=KEY, limited_page="a", limited_http="b"))
    with pytest.raises(RuntimeError, match=r"https://app\.example\.com/") as failed:
        start_gateway(policy, env={"POLYROUTE_CORS_ORIGINS": "https://app.example.com/"})
    assert "no path, no trailing slash" in str(failed.value)
