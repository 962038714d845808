"""Tenants as applications meet them, on the in-process store: keys, allowed models, limits, budgets, bad input."""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.policy.table import hash_api_key
from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
ADMIN_KEY = "adm-tenants-secret"
KEYS = {
    "team-a": "sk-team-a-secret",
    "team-b": "sk-team-b-secret",
    "rpm-team": "sk-rpm-team",
    "tpm-team": "sk-tpm-team",
    "budget-team": "sk-budget-team",
    "month-team": "sk-month-team",
}
PRICE = "{input_per_mtok: 1000, output_per_mtok: 1000, currency: USD}"  # a request costs cents: easy to sum

POLICY = """
version: 1
providers:
  pool: {{type: openai, base_url: "{base_url}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  main:      {{provider: pool, model: main-model, price: {price}}}
  other:     {{provider: pool, model: other-model, price: {price}}}
  quota-a:   {{provider: pool, model: quota-a-model, rpm: 2, price: {price}}}
  quota-b:   {{provider: pool, model: quota-b-model, price: {price}}}
aliases:
  chat:        {{targets: [main], strategy: priority}}
  other:       {{targets: [other], strategy: priority}}
  quota-chat:  {{targets: [quota-a, quota-b], strategy: priority}}
  quota-only:  {{targets: [quota-a], strategy: priority}}
fallback:
  retries: {{attempts: 0}}
tenants:
  team-a:
    api_keys: ["${{TEAM_A_KEY}}"]
    models: [chat, quota-chat, quota-only]
  team-b:
    api_keys: ["sha256:{team_b_hash}"]
    models: [other]
  rpm-team:      {{api_keys: ["{rpm}"], limits: {{rpm: 3}}}}
  tpm-team:      {{api_keys: ["{tpm}"], limits: {{tpm: 200}}}}
  budget-team:   {{api_keys: ["{budget}"], budget: {{usd_per_day: 1.0}}}}
  month-team:    {{api_keys: ["{month}"], budget: {{usd_per_month: 0.5}}}}
{extra}"""
ANONYMOUS = """  public:
    anonymous: true
    models: [other]
"""


@dataclass
class Gateways:
    strict: GatewayProcess  # every caller needs a key
    open: GatewayProcess  # the same policy plus an anonymous tenant
    upstream: Upstream
    root: openai.OpenAI  # one connection pool for every call: a client per call would cost more than the call

    def client(self, gateway: GatewayProcess, tenant: str | None = None, key: str | None = None) -> openai.OpenAI:
        api_key = key if key is not None else KEYS[tenant or "team-a"]
        return self.root.with_options(base_url=gateway.url("/v1"), api_key=api_key)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    upstream = start_simulated("vllm", name="sim-tenants")
    folder = tmp_path_factory.mktemp("tenants")
    values = {
        "base_url": upstream.base_url,
        "price": PRICE,
        "team_b_hash": hash_api_key(KEYS["team-b"]),
        "rpm": KEYS["rpm-team"],
        "tpm": KEYS["tpm-team"],
        "budget": KEYS["budget-team"],
        "month": KEYS["month-team"],
    }
    (folder / "strict.yaml").write_text(POLICY.format(extra="", **values))
    (folder / "open.yaml").write_text(POLICY.format(extra=ANONYMOUS, **values))
    env = {"TEAM_A_KEY": KEYS["team-a"], "POLYROUTE_ADMIN_KEY": ADMIN_KEY}

    def start(name: str) -> GatewayProcess:
        return start_gateway(Path(folder / name), env=env)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        strict, opened = pool.map(start, ["strict.yaml", "open.yaml"])
    try:
        with openai.OpenAI(api_key="none", max_retries=0, timeout=30) as root:
            yield Gateways(strict, opened, upstream, root)
    finally:
        for process in (strict, opened, upstream):
            process.stop()


def call(
    gateway: GatewayProcess, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names) and JSON body of one request, whatever its status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(gateway.url(path), data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read())


def raw_http(gateway: GatewayProcess, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client would send (CR/LF inside a header value); read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


# --- keys -------------------------------------------------------------------------------------------------------


def test_a_request_without_a_key_is_401(gw: Gateways) -> None:
    for method, path, body in (
        ("POST", "/v1/chat/completions", {"model": "chat", "messages": HELLO}),
        ("GET", "/v1/models", None),
    ):
        status, _, answer = call(gw.strict, method, path, body=body)
        assert status == 401
        assert answer["error"]["type"] == "authentication_error"
        assert "API key" in answer["error"]["message"]


def test_a_wrong_key_is_401_and_never_echoed(gw: Gateways) -> None:
    wrong = "sk-team-a-secreT"
    with pytest.raises(openai.AuthenticationError) as info:
        gw.client(gw.strict, key=wrong).chat.completions.create(model="chat", messages=HELLO)
    assert wrong not in str(info.value.body)
    status, _, answer = call(gw.strict, "GET", "/v1/models", {"authorization": "Basic dXNlcjpwYXNz"})
    assert status == 401 and "Bearer" in answer["error"]["message"]


def test_keys_from_env_and_from_sha256_hashes_both_work_through_either_header(gw: Gateways) -> None:
    reply = gw.client(gw.strict, "team-a").chat.completions.create(model="chat", messages=HELLO)
    assert reply.choices[0].message.content
    status, _, answer = call(gw.strict, "GET", "/v1/models", {"x-api-key": KEYS["team-b"]})
    assert status == 200 and [m["id"] for m in answer["data"]] == ["other"]


def test_each_tenant_sees_and_uses_only_its_own_models(gw: Gateways) -> None:
    seen = {t: {m.id for m in gw.client(gw.strict, t).models.list().data} for t in ("team-a", "team-b", "rpm-team")}
    assert seen["team-a"] == {"chat", "quota-chat", "quota-only"}
    assert seen["team-b"] == {"other"}
    assert seen["rpm-team"] == {"chat", "other", "quota-chat", "quota-only"}  # `models` omitted: every alias
    # Team B's key gives team B's permissions, nothing of team A's, and the reverse.
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.client(gw.strict, "team-b").chat.completions.create(model="chat", messages=HELLO)
    assert info.value.body["code"] == "model_not_allowed"  # type: ignore[index]
    assert "team-b" in info.value.message and "chat" in info.value.message
    with pytest.raises(openai.PermissionDeniedError):
        gw.client(gw.strict, "team-a").chat.completions.create(model="other", messages=HELLO)
    raw = gw.client(gw.strict, "team-b").chat.completions.with_raw_response.create(model="other", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == "other"


def test_an_anonymous_tenant_serves_callers_without_a_key_but_a_wrong_key_is_still_401(gw: Gateways) -> None:
    status, _, answer = call(gw.open, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in answer["data"]] == ["other"]
    status, _, answer = call(gw.open, "POST", "/v1/chat/completions", body={"model": "other", "messages": HELLO})
    assert status == 200 and answer["choices"][0]["message"]["content"]
    status, _, answer = call(gw.open, "POST", "/v1/chat/completions", body={"model": "chat", "messages": HELLO})
    assert status == 403 and "public" in answer["error"]["message"]
    status, _, _ = call(gw.open, "GET", "/v1/models", {"authorization": "Bearer sk-typo"})
    assert status == 401  # a mistyped key never falls back to the anonymous tenant
    assert {m.id for m in gw.client(gw.open, "team-a").models.list().data} == {"chat", "quota-chat", "quota-only"}


def test_admin_endpoints_need_the_admin_key(gw: Gateways) -> None:
    body = {"model": "chat", "messages": HELLO}
    for headers in ({}, {"authorization": f"Bearer {KEYS['team-a']}"}, {"authorization": "Bearer adm-tenants-secreT"},
                    {"authorization": f"Bearer {ADMIN_KEY}x"}, {"authorization": f"Basic {ADMIN_KEY}"}):
        for method, path, payload in (("GET", "/admin/usage", None), ("POST", "/admin/reload", None),
                                      ("POST", "/admin/routes/explain", body)):
            status, _, answer = call(gw.strict, method, path, headers, payload)
            assert status == 401, (headers, path)
            assert ADMIN_KEY not in json.dumps(answer)
    status, _, answer = call(gw.strict, "GET", "/admin/usage", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200 and "groups" in answer
    # The admin key is not a tenant key.
    status, _, _ = call(gw.strict, "POST", "/v1/chat/completions", {"authorization": f"Bearer {ADMIN_KEY}"}, body)
    assert status == 401


def test_malformed_keys_get_a_clean_401(gw: Gateways) -> None:
    for key in ("k" * 10_240, "sk-tëam-a", "sk team a", "sk-team-a-secret" * 40):
        status, headers, answer = call(gw.strict, "GET", "/v1/models", {"x-api-key": key})
        assert status == 401, key
        assert answer["error"]["message"] == "Incorrect API key provided."
        assert headers["content-type"] == "application/json"
    status, _, body = raw_http(
        gw.strict, b"GET /v1/models HTTP/1.1\r\nHost: t\r\nx-api-key: sk-\xff\xfe\r\nConnection: close\r\n\r\n"
    )
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer sk-team-a-secret\rX-Injected: yes",  # a header smuggled after a bare CR
        b"x-api-key: sk-team-a-secret\nX-Injected: yes",  # after a bare LF
        b"x-polyroute-tags: a\rX-Injected: yes",
        b"x-request-id: abc\rX-Injected: yes",
        b"x-polyroute-data-class: pii\r\n X-Injected: yes",  # an obsolete folded continuation line
        b"x-api-key: sk-team-a\x00secret",  # control characters
        b"x-api-key: sk-team-a\x01secret",
    ],
)
def test_header_injection_is_refused_and_never_reflected(gw: Gateways, header: bytes) -> None:
    body = json.dumps({"model": "chat", "messages": HELLO}).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + header
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    status, headers, answer = raw_http(gw.strict, request)
    assert status in (400, 401)
    assert "x-injected" not in headers
    assert b"X-Injected" not in answer


def test_request_ids_and_hints_are_reflected_only_when_clean(gw: Gateways) -> None:
    c = gw.client(gw.strict, "team-a")
    raw = c.chat.completions.with_raw_response.create(
        model="chat", messages=HELLO, extra_headers={"x-request-id": "abc <b>%0d%0aX-Injected: 1"}
    )
    assert re.fullmatch(r"[0-9a-f]{32}", raw.headers["x-request-id"])  # replaced, not echoed
    assert "x-injected" not in raw.headers
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="chat", messages=HELLO, extra_headers={"x-polyroute-tags": "a%0d%0aX: 1"})
    assert info.value.body["param"] == "x-polyroute-tags"  # type: ignore[index]


# --- metadata -----------------------------------------------------------------------------------------------------


def test_metadata_within_openai_limits_is_accepted(gw: Gateways) -> None:
    metadata = {f"k{i:02d}": "v" * 512 for i in range(15)} | {"data_class": "internal"}
    reply = gw.client(gw.strict, "team-a").chat.completions.create(model="chat", messages=HELLO, metadata=metadata)
    assert reply.choices[0].message.content


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({f"k{i}": "v" for i in range(100_000)}, "has 100000 keys"),  # about 1.5 MB, well inside the body limit
        ({f"k{i}": "v" for i in range(17)}, "has 17 keys"),
        ({"note": "x" * 513}, "'metadata.note' is 513 characters"),
        ({"k" * 65: "v"}, "key is 65 characters"),
        ({"nested": {"a": 1}}, "'metadata.nested' is not a string"),
        (["data_class", "pii"], "must be an object"),
        ({"tags": ["t"] * 10_000}, "at most 16 tags"),
    ],
)
def test_oversized_or_malformed_metadata_is_400_naming_the_limit(gw: Gateways, metadata: Any, problem: str) -> None:
    body = {"model": "chat", "messages": HELLO, "metadata": metadata}
    status, _, answer = call(gw.strict, "POST", "/v1/chat/completions", {"authorization": f"Bearer {KEYS['team-a']}"},
                             body)
    assert status == 400
    assert problem in answer["error"]["message"]
    assert answer["error"]["param"] in ("metadata", "metadata.tags")
    if answer["error"]["param"] == "metadata":
        assert "at most 16 keys" in answer["error"]["message"]


# --- limits -------------------------------------------------------------------------------------------------------


def test_tenant_rpm_gives_429_with_retry_after_and_ratelimit_headers(gw: Gateways) -> None:
    c = gw.client(gw.strict, "rpm-team")
    remaining = []
    for _ in range(3):
        raw = c.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="chat", messages=HELLO)
    headers = info.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 61  # when the first counted second leaves the window
    assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-remaining-requests"] == "0"
    assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    message = info.value.body["message"]  # type: ignore[index]
    assert "rpm-team" in message and "3 requests per minute" in message
    assert f"Try again in {headers['retry-after']}s" in message  # the message and the header agree


def test_tenant_tpm_limits_tokens_and_refuses_a_request_larger_than_the_limit(gw: Gateways) -> None:
    c = gw.client(gw.strict, "tpm-team")
    prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * 400}]  # ~104 tokens
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="chat", messages=prompt, max_tokens=1000)
    assert "Request too large" in info.value.message and "200 tokens per minute" in info.value.message
    # ~114 tokens each (prompt + max_tokens); the reply uses ~103: one request fits in 200, never two, settled or not.
    raw = c.chat.completions.with_raw_response.create(model="chat", messages=prompt, max_tokens=10)
    assert raw.headers["x-ratelimit-limit-tokens"] == "200"
    assert raw.headers["x-ratelimit-remaining-tokens"] == "86"
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="chat", messages=prompt, max_tokens=10)
    headers = info.value.response.headers
    assert headers["x-ratelimit-limit-tokens"] == "200" and int(headers["x-ratelimit-remaining-tokens"]) < 114
    assert "Rate limit reached for tenant 'tpm-team': 200 tokens per minute" in info.value.message
    assert 1 <= int(headers["retry-after"]) <= 61  # when the first counted second leaves the window


def test_a_deployment_at_its_rpm_is_skipped_and_429_only_when_no_target_is_left(gw: Gateways) -> None:
    c = gw.client(gw.strict, "team-a")
    served_by = [
        c.chat.completions.with_raw_response.create(model="quota-chat", messages=HELLO).headers[
            "x-polyroute-deployment"
        ]
        for _ in range(4)
    ]
    assert served_by == ["quota-a", "quota-a", "quota-b", "quota-b"]  # quota-a allows 2 requests a minute
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="quota-only", messages=HELLO)
    message = info.value.message
    assert "'quota-only'" in message and "quota-a: 2 requests" in message
    retry_after = int(info.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 61 and f"Try again in {retry_after}s" in message  # when quota-a frees


# --- budgets ------------------------------------------------------------------------------------------------------


def usage_of(gateway: GatewayProcess, tenant: str) -> tuple[int, float]:
    status, _, report = call(gateway, "GET", "/admin/usage?group_by=tenant", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200
    rows = [g for g in report["groups"] if g["tenant"] == tenant]
    return (rows[0]["requests"], rows[0]["cost_usd"]) if rows else (0, 0.0)


def wait_for_usage(gateway: GatewayProcess, tenant: str, requests: int, timeout: float = 10.0) -> float:
    """Usage is written after each response, off the response path: wait (bounded) until it shows `requests`."""
    deadline = time.monotonic() + timeout
    while (seen := usage_of(gateway, tenant))[0] < requests:
        assert time.monotonic() < deadline, f"usage of {tenant} shows {seen[0]} requests, expected {requests}"
        time.sleep(0.05)
    assert seen[0] == requests
    return seen[1]


def spent_in(message: str) -> float:
    found = re.search(r"spent \$([0-9.]+) today", message)
    assert found, message
    return float(found.group(1))


def test_budget_spend_is_reconciled_to_the_actual_cost_and_a_request_that_would_exceed_it_is_429(
    gw: Gateways,
) -> None:
    c = gw.client(gw.strict, "budget-team")
    costs = []
    for _ in range(5):
        # Admission reserves prompt + max_tokens (~$0.054); the reply uses far fewer tokens, and spend is corrected.
        raw = c.chat.completions.with_raw_response.create(model="chat", messages=HELLO, max_tokens=50)
        costs.append(float(raw.headers["x-polyroute-cost-usd"]))
    assert all(0 < cost < 0.054 for cost in costs)
    recorded = wait_for_usage(gw.strict, "budget-team", 5)
    assert recorded == pytest.approx(sum(costs), abs=1e-6)

    with pytest.raises(openai.RateLimitError) as info:  # estimated at about $2,000 against a $1 budget
        c.chat.completions.create(model="chat", messages=HELLO, max_tokens=2_000_000)
    body = info.value.body
    assert body["code"] == "insufficient_quota" and body["type"] == "insufficient_quota"  # type: ignore[index]
    message = info.value.message
    assert "Daily budget of $1 for tenant 'budget-team' would be exceeded" in message
    assert "resets at 00:00 UTC" in message
    assert spent_in(message) == pytest.approx(sum(costs), abs=1e-6)  # the reservations were settled to the cost
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 86_400
    # The refused request cost nothing and reserved nothing: a small one still fits.
    assert c.chat.completions.create(model="chat", messages=HELLO, max_tokens=50).choices


def test_a_monthly_budget_refuses_a_request_estimated_above_it(gw: Gateways) -> None:
    c = gw.client(gw.strict, "month-team")
    with pytest.raises(openai.RateLimitError) as info:  # prompt + 1,000,000 output tokens at $1000/Mtok
        c.chat.completions.create(model="chat", messages=HELLO, max_tokens=1_000_000)
    message = info.value.message
    assert "Monthly budget of $0.5 for tenant 'month-team' would be exceeded: spent $0 this month" in message
    assert "this request is estimated at $1000.004" in message and "resets on the 1st of the month" in message
    assert info.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 31 * 86_400
    assert c.chat.completions.create(model="chat", messages=HELLO, max_tokens=50).choices
