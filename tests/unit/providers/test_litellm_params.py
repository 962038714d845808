"""What of a request body reaches litellm: its arguments are read from the installed litellm itself, not listed here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import litellm
import pytest
from litellm.types.utils import all_litellm_params

from gateway.errors import BadRequestError
from gateway.providers.base import Endpoint
from gateway.providers.litellm_params import OPENAI_PARAMS, PROVIDER_EXTRAS, forwarded_params

FORWARDED = frozenset().union(*OPENAI_PARAMS.values()) | PROVIDER_EXTRAS
OUTPUT_ONLY_LITELLM_ARGUMENTS = frozenset({"thinking", "top_k"})  # reviewed: they shape the answer, nothing else


def litellm_arguments() -> set[str]:
    """Every name litellm's entry points take as a parameter or read from their **kwargs, and its own param list."""
    names: set[str] = set()
    for function in (litellm.completion, litellm.acompletion, litellm.text_completion, litellm.embedding):
        names |= set(inspect.signature(function).parameters)
    source = Path(litellm.__file__).with_name("main.py").read_text()
    names |= set(re.findall(r'kwargs\.(?:get|pop)\(\s*"([A-Za-z_][\w-]*)"', source))
    return names | set(all_litellm_params)


def test_no_litellm_argument_is_forwarded_unless_it_is_an_openai_parameter_or_reviewed() -> None:
    arguments = litellm_arguments()
    assert {"api_base", "base_url", "api_key", "extra_headers", "mock_response", "model_list"} <= arguments
    openai_names = frozenset().union(*OPENAI_PARAMS.values())
    # A litellm upgrade that starts to read one of the forwarded names as its own argument fails here, for review.
    assert (arguments & FORWARDED) - openai_names == OUTPUT_ONLY_LITELLM_ARGUMENTS


def test_no_forwarded_name_looks_like_a_url_a_credential_or_a_header() -> None:
    suspicious = re.compile(r"^(api|aws|azure|vertex|litellm|proxy)_|url|base|header|secret|credential|token$|key$")
    assert {name for name in FORWARDED if suspicious.search(name)} == {"prompt_cache_key"}


@pytest.mark.parametrize("name", ["api_base", "base_url", "api_key", "extra_headers", "callbacks", "client", "x"])
def test_any_other_key_is_a_400_naming_it(name: str) -> None:
    with pytest.raises(BadRequestError) as info:
        forwarded_params(Endpoint.CHAT, {"model": "m", "messages": [], name: "v"}, "claude")
    assert info.value.param == name
    assert info.value.code == "unsupported_parameter"
    assert f"'{name}'" in info.value.message and "'claude'" in info.value.message


def test_parameters_extras_and_gateway_keys() -> None:
    body = {"model": "m", "messages": [], "stream": True, "metadata": {"data_class": "pii"}, "temperature": 0.1,
            "enable_thinking": True, "top_k": 4}
    assert forwarded_params(Endpoint.CHAT, body, "p") == {"temperature": 0.1, "enable_thinking": True, "top_k": 4}
    assert forwarded_params(Endpoint.EMBEDDING, {"input": "x", "dimensions": 8}, "p") == {"dimensions": 8}
    with pytest.raises(BadRequestError):  # extras shape generated text; an embedding request has none
        forwarded_params(Endpoint.EMBEDDING, {"input": "x", "top_k": 4}, "p")


def test_only_chat_completions_tool_types_pass() -> None:
    function = {"type": "function", "function": {"name": "f", "parameters": {}}}
    assert forwarded_params(Endpoint.CHAT, {"tools": [function]}, "p") == {"tools": [function]}
    with pytest.raises(BadRequestError) as info:
        forwarded_params(Endpoint.CHAT, {"tools": [function, {"type": "mcp", "server_url": "http://x/mcp/y"}]}, "p")
    assert info.value.param == "tools[1].type"
