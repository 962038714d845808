"""Which request-body keys reach litellm: OpenAI's request parameters and output-only provider extras, nothing else.

litellm's functions take the request's parameters and their own transport, credential and routing arguments in one
keyword namespace (`api_base`, `base_url`, `api_key`, `extra_headers`, `mock_response`, `timeout`, `callbacks`,
`aws_*`, `vertex_*`, `region_name`, ...), and pass any name they do not know on to the provider. So the rule here is
an allow-list: a key is forwarded only if it is listed below; any other key is a 400 naming it, never passed on and
never dropped without a word. A new litellm argument is therefore refused until someone adds it here on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import BadRequestError
from gateway.providers.base import Endpoint

# Property names of OpenAI's CreateChatCompletionRequest, CreateCompletionRequest and CreateEmbeddingRequest
# (openai/openai-openapi at f85dbe223d40e1a31cba812ab2d755c7e98a92a3, 2026-08-21), less the keys the provider sets
# itself (model, messages, prompt, input, stream) and `metadata` (below).
OPENAI_PARAMS: Mapping[Endpoint, frozenset[str]] = {
    Endpoint.CHAT: frozenset({
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "modalities", "moderation", "n", "parallel_tool_calls", "prediction",
        "presence_penalty", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning_effort",
        "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream_options",
        "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }),
    Endpoint.COMPLETION: frozenset({
        "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
        "seed", "stop", "stream_options", "suffix", "temperature", "top_p", "user",
    }),
    Endpoint.EMBEDDING: frozenset({"dimensions", "encoding_format", "user"}),
    # CreateImageRequest (the same document), less `prompt` and `model`; `stream` and `partial_images` are refused
    # before here (polyroute does not stream images).
    Endpoint.IMAGE: frozenset({
        "background", "moderation", "n", "output_compression", "output_format", "quality", "response_format",
        "size", "style", "user",
    }),
}

# Provider extras that only shape what the model generates (sampling, reasoning, search, structured output, the chat
# template); none of them names a URL, a credential, a header or a transport setting.
PROVIDER_EXTRAS = frozenset({
    # Model Studio (Qwen)
    "enable_thinking", "thinking_budget", "preserve_thinking", "enable_search", "search_options",
    # Anthropic and Gemini through litellm
    "thinking", "top_k", "safety_settings",
    # vLLM and SGLang sampling and structured output
    "min_p", "repetition_penalty", "min_tokens", "chat_template_kwargs",
    "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs",
})

# Read by polyroute itself (routing hints); litellm takes `metadata` as its own logging and callback argument, not as
# OpenAI's field, so it is not handed on.
READ_BY_GATEWAY = frozenset({"metadata"})

# Set by the provider module itself from the deployment and the request.
SET_BY_PROVIDER = frozenset({"model", "messages", "prompt", "input", "stream"})

# Chat Completions tool types; litellm treats others (`mcp`) as MCP servers of its own proxy and acts on them.
TOOL_TYPES = frozenset({"function", "custom"})

_FORWARDED: Mapping[Endpoint, frozenset[str]] = {
    Endpoint.CHAT: OPENAI_PARAMS[Endpoint.CHAT] | PROVIDER_EXTRAS,
    Endpoint.COMPLETION: OPENAI_PARAMS[Endpoint.COMPLETION] | PROVIDER_EXTRAS,
    Endpoint.EMBEDDING: OPENAI_PARAMS[Endpoint.EMBEDDING],
    Endpoint.IMAGE: OPENAI_PARAMS[Endpoint.IMAGE],
}
_SKIPPED = SET_BY_PROVIDER | READ_BY_GATEWAY


def forwarded_params(endpoint: Endpoint, body: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """The body's keys that go to litellm as they came; 400 naming the first key that may not."""
    allowed = _FORWARDED.get(endpoint, frozenset())
    params: dict[str, Any] = {}
    for key, value in body.items():
        if key in allowed:
            params[key] = value
        elif key not in _SKIPPED:
            raise BadRequestError(
                f"Unsupported parameter: '{key[:100]}' is not forwarded to provider '{provider}' (type litellm), which "
                "takes only OpenAI's request parameters and the provider extras listed in polyroute's README.",
                param=key[:100],
                code="unsupported_parameter",
            )
    tools = params.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in TOOL_TYPES:
                raise BadRequestError(
                    f"Unsupported tool type {str(kind)[:100]!r} in tools[{index}]: provider '{provider}' "
                    "(type litellm) takes only Chat Completions tools (function, custom).",
                    param=f"tools[{index}].type",
                    code="unsupported_parameter",
                )
    return params
