"""The HTTP surface as a client meets it: models, passthrough, errors, hints, fallback, body limits."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.support.stack import Stack

HELLO = [{"role": "user", "content": "hello"}]


def post_raw(stack: Stack, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    req = urllib.request.Request(stack.gateway.url(path), data=body, method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def test_models_lists_aliases(stack: Stack) -> None:
    ids = {m.id for m in stack.client().models.list().data}
    assert {"coder", "conf-openai", "conf-litellm", "cloud-only"} <= ids


def test_priority_alias_goes_to_cloud_with_provider_key(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(model="coder", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == "qwen-plus"
    assert float(raw.headers["x-polyroute-cost-usd"]) > 0
    seen = stack.cloud.stats()
    assert seen["last_headers"]["Authorization"] == "Bearer sk-sim-cloud-secret"
    assert seen["last_body"]["model"] == "qwen3.6-plus"


def test_unknown_fields_pass_through_and_reasoning_comes_back(stack: Stack) -> None:
    reply = stack.client().chat.completions.create(
        model="cloud-only", messages=HELLO, extra_body={"enable_thinking": True, "enable_search": True}
    )
    body = stack.cloud.stats()["last_body"]
    assert body["enable_thinking"] is True and body["enable_search"] is True
    assert reply.choices[0].message.model_extra and reply.choices[0].message.model_extra.get("reasoning_content")


def test_streamed_reasoning_content_comes_back(stack: Stack) -> None:
    stream = stack.client().chat.completions.create(
        model="cloud-only", messages=HELLO, stream=True, extra_body={"enable_thinking": True}
    )
    reasoning = [c.choices[0].delta.model_extra.get("reasoning_content") for c in stream if c.choices
                 and c.choices[0].delta.model_extra]
    assert any(reasoning)


def test_legacy_completions(stack: Stack) -> None:
    result = stack.client().completions.create(model="conf-openai", prompt="once upon a time")
    assert result.choices[0].text
    streamed = list(stack.client().completions.create(model="conf-openai", prompt="once", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices)


def test_ollama_flavour(stack: Stack) -> None:
    reply = stack.client().chat.completions.create(model="ollama", messages=HELLO)
    assert "sim-ollama" in (reply.choices[0].message.content or "")


def test_pii_stays_on_self_hosted(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="coder", messages=HELLO, extra_headers={"x-polyroute-data-class": "pii"}
    )
    assert raw.headers["x-polyroute-deployment"] == "qwen-local"
    raw = stack.client().chat.completions.with_raw_response.create(
        model="coder", messages=HELLO, metadata={"data_class": "pii"}
    )
    assert raw.headers["x-polyroute-deployment"] == "qwen-local"


def test_pii_on_cloud_only_alias_is_refused_naming_the_rule(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="cloud-only", messages=HELLO, extra_headers={"x-polyroute-data-class": "pii"}
        )
    assert "pii-stays-home" in str(info.value)


def test_fallback_on_model_studio_throttling(stack: Stack) -> None:
    stack.cloud.inject([{"fault": "throttling", "count": 1}])
    raw = stack.client().chat.completions.with_raw_response.create(model="coder", messages=HELLO)
    assert raw.headers["x-polyroute-deployment"] == "qwen-local"
    assert raw.headers["x-polyroute-fallback-reason"] == "rate_limit"
    assert raw.headers["x-polyroute-attempts"] == "2"


def test_every_target_failing_lists_each_cause(stack: Stack) -> None:
    stack.cloud.inject([{"fault": "internal", "count": 1}])
    stack.vllm.inject([{"fault": "status", "status": 503, "count": 1}])
    with pytest.raises(openai.APIStatusError) as info:
        stack.client().chat.completions.create(model="coder", messages=HELLO)
    assert info.value.status_code == 502
    message = str(info.value)
    assert "qwen-plus: server_error" in message and "qwen-local: server_error" in message
    assert "sk-sim-cloud-secret" not in message


def test_unknown_alias_is_404(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        stack.client().chat.completions.create(model="gpt-99", messages=HELLO)
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_missing_model_is_400(stack: Stack) -> None:
    status, body = post_raw(stack, "/v1/chat/completions", json.dumps({"messages": HELLO}).encode())
    assert status == 400
    assert body["error"]["param"] == "model" and body["error"]["type"] == "invalid_request_error"


def test_bad_json_is_400(stack: Stack) -> None:
    status, body = post_raw(stack, "/v1/chat/completions", b'{"model": "coder", "messages": [')
    assert status == 400
    assert "not valid JSON" in body["error"]["message"]


def test_bad_hint_is_400(stack: Stack) -> None:
    status, body = post_raw(stack, "/v1/chat/completions", json.dumps({"model": "coder", "messages": HELLO}).encode(),
                            {"x-polyroute-data-class": "pii; drop table"})
    assert status == 400 and body["error"]["param"] == "x-polyroute-data-class"


def test_oversized_body_is_413(stack: Stack) -> None:
    huge = json.dumps({"model": "coder", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]})
    status, body = post_raw(stack, "/v1/chat/completions", huge.encode())
    assert status == 413
    assert body["error"]["code"] == "request_too_large"


def test_unknown_path_is_openai_404(stack: Stack) -> None:
    status, body = post_raw(stack, "/v1/nope", b"{}")
    assert status == 404 and "error" in body


def test_health_and_readiness(stack: Stack) -> None:
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(stack.gateway.url(path), timeout=10) as resp:
            assert resp.status == 200


def test_route_explain_admin(stack: Stack) -> None:
    body = json.dumps({"model": "coder", "messages": HELLO}).encode()
    status, result = post_raw(stack, "/admin/routes/explain", body,
                              {"authorization": "Bearer adm", "x-polyroute-data-class": "pii"})
    assert status == 200
    assert result["attempts"] == ["qwen-local"]
    assert any("pii-stays-home" in line for line in result["trace"])
    status, result = post_raw(stack, "/admin/routes/explain", body, {"authorization": "Bearer wrong"})
    assert status == 401


def test_secrets_never_in_logs(stack: Stack) -> None:
    stack.client().chat.completions.create(model="coder", messages=HELLO)
    assert "sk-sim-cloud-secret" not in stack.gateway.logs()
    with urllib.request.urlopen(stack.gateway.url("/metrics"), timeout=10) as resp:
        assert b"sk-sim-cloud-secret" not in resp.read()
