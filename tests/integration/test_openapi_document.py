"""GET /openapi.json and /docs as a tool or a person reads them: valid OpenAPI that documents the whole gateway."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from tests.support.processes import start_gateway
from tests.support.stack import Stack

PROXIED = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses")
ROUTE_HEADERS = {"x-request-id", "x-polyroute-route", "x-polyroute-deployment", "x-polyroute-attempts",
                 "x-polyroute-fallback-reason", "x-polyroute-cost-usd"}
ERROR_STATUSES = {"400", "401", "403", "404", "413", "429", "502", "503", "504"}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers.get("content-type", ""), err.read()


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    status, content_type, body = get(stack.gateway.url("/openapi.json"))
    assert status == 200 and content_type.startswith("application/json")
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_the_document_is_valid_openapi(stack: Stack, document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 meta-schema
    schemas = document["components"]["schemas"]
    dangling = {r for r in refs(document) if r.removeprefix("#/components/schemas/") not in schemas}
    assert not dangling


@pytest.mark.parametrize("path", PROXIED)
def test_each_proxied_path_with_its_hints_headers_and_errors(document: dict[str, Any], path: str) -> None:
    operation = document["paths"][path]["post"]
    assert {p["name"] for p in operation["parameters"] if p["in"] == "header"} == {
        "x-polyroute-tags", "x-polyroute-data-class"
    }
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.startswith("#/components/schemas/")
    ok = operation["responses"]["200"]
    assert set(ok["headers"]) == ROUTE_HEADERS
    assert "application/json" in ok["content"]
    assert ("text/event-stream" in ok["content"]) == (path != "/v1/embeddings")
    assert set(operation["responses"]) >= ERROR_STATUSES
    envelope = "AnthropicErrorEnvelope" if path == "/v1/messages" else "ErrorEnvelope"
    for status in ERROR_STATUSES:
        assert operation["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith(envelope)
    assert "retry-after" in operation["responses"]["429"]["headers"]


def test_the_envelopes_and_management_routes_are_documented(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorEnvelope"]["properties"]) == {"error"}
    assert set(schemas["ErrorDetail"]["required"]) == {"message", "type"}
    assert schemas["ChatCompletionRequest"]["additionalProperties"] is True  # OpenAI's extras pass through
    paths = document["paths"]
    for path in ("/v1/models", "/v1/models/{model}", "/healthz", "/readyz", "/admin/usage"):
        assert "get" in paths[path], path
    for path in ("/admin/reload", "/admin/routes/explain", "/v1/messages/count_tokens"):
        assert "post" in paths[path], path
    assert paths["/admin/usage"]["get"]["security"] == [{"AdminKey": []}]
    # FastAPI's own 422 is never sent: a validation failure is the 400 envelope
    assert not any("422" in op["responses"] for ops in paths.values() for op in ops.values()
                   if op.get("operationId") != "reload_admin_reload_post")
    assert "HTTPValidationError" not in schemas


def test_docs_page_loads_the_document(stack: Stack) -> None:
    status, content_type, body = get(stack.gateway.url("/docs"))
    assert status == 200 and content_type.startswith("text/html")
    assert b"/openapi.json" in body and b"swagger" in body.lower()


def test_a_validation_failure_is_the_400_envelope_naming_the_field(stack: Stack) -> None:
    status, _, body = get(stack.gateway.url("/admin/usage?days=0"), {"authorization": "Bearer adm"})
    error = json.loads(body)["error"]
    assert status == 400 and error["type"] == "invalid_request_error" and error["param"] == "days"
    status, _, body = get(stack.gateway.url("/admin/usage?days=two"), {"authorization": "Bearer adm"})
    assert status == 400 and json.loads(body)["error"]["param"] == "days"


def test_docs_off_turns_off_the_document_and_the_page(stack: Stack, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    provider = f"{{type: openai, base_url: '{stack.vllm.base_url}', hosting: self_hosted, jurisdiction: onprem, "
    policy.write_text(f"version: 1\nproviders:\n  p: {provider}vendor: self}}\n"
                      "deployments:\n  d: {provider: p, model: m}\naliases:\n  a: {targets: [d]}\n")
    gateway = start_gateway(policy, env={"POLYROUTE_DOCS": "false"})
    try:
        for path in ("/openapi.json", "/docs"):
            status, _, body = get(gateway.url(path))
            assert status == 404 and json.loads(body)["error"]["code"] == "unknown_url", path
        assert get(gateway.url("/v1/models"))[0] == 200
    finally:
        gateway.stop()
