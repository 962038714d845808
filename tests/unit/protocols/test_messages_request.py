"""Anthropic Messages requests as the Chat Completions requests a Chat-only target receives; 400s naming a field."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import BadRequestError
from gateway.policy.table import Thinking
from gateway.protocols.messages_request import fit_thinking, messages_to_chat


def translate(**body: Any) -> dict[str, Any]:
    return messages_to_chat({"model": "coder", "max_tokens": 100, **body})


def refused(**body: Any) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        translate(**body)
    return caught.value


def test_string_system_and_content() -> None:
    chat = translate(system="be terse", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert chat == {
        "model": "coder",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}],
    }



@pytest.mark.parametrize("text", ["", "one line", "two\nlines"])
def test_a_plain_text_turn_translates_as_the_same_turn_written_as_one_text_block(text: str) -> None:
    as_string = [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
    as_block = [{"role": role, "content": [{"type": "text", "text": text}]} for role in ("user", "assistant")]
    assert translate(messages=as_string) == translate(messages=as_block)
    assert translate(messages=as_string)["messages"] == as_string  # an empty reply stays "", not null


def test_a_turn_with_a_key_messages_does_not_define_is_refused_naming_it() -> None:
    err = refused(messages=[{"role": "user", "content": "hi", "name": "alice"}])
    assert err.param == "messages[0].name"

def test_tool_results_come_first_then_the_rest_of_the_user_turn() -> None:
    chat = translate(
        messages=[
            {"role": "user", "content": "list files"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "use ls", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "t2", "name": "Bash", "input": {"command": "pwd"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "a.py"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "no"}],
                 "is_error": True},
                {"type": "text", "text": "and now?"},
            ]},
        ]
    )
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "use ls",
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}},
            {"id": "t2", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"pwd"}'}},
        ],
    }
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "a.py"},
        {"role": "tool", "tool_call_id": "t2", "content": "[tool error] no"},
        {"role": "user", "content": "and now?"},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "Edit", "disable_parallel_tool_use": True},
         {"tool_choice": {"type": "function", "function": {"name": "Edit"}}, "parallel_tool_calls": False}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    tools = [{"name": "Edit", "description": "edit", "input_schema": {"type": "object"}}]
    chat = translate(messages=[{"role": "user", "content": "x"}], tools=tools, tool_choice=choice)
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "Edit", "parameters": {"type": "object"}, "description": "edit"}}
    ]
    assert {k: chat[k] for k in expected} == expected


def test_thinking_and_metadata() -> None:
    chat = translate(
        messages=[{"role": "user", "content": "x"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": "u1", "data_class": "pii"},
    )
    assert (chat["enable_thinking"], chat["thinking_budget"], chat["user"]) == (True, 1024, "u1")
    assert chat["metadata"] == {"data_class": "pii"}  # polyroute's routing hints stay readable
    disabled = translate(messages=[{"role": "user", "content": "x"}], thinking={"type": "disabled"})
    assert disabled["enable_thinking"] is False


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "mcp_servers": []}, "mcp_servers"),
        ({"messages": [{"role": "user", "content": "x"}], "container": "c1"}, "container"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ["x"]}, "stop"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}]}]}]},
         "messages[0].content[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "citations": []}]}]},
         "messages[0].content[0].citations"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "bash_20250124", "name": "bash"}]},
         "tools[0].type"),
        ({"messages": [{"role": "user", "content": "x"}], "system": [{"type": "image"}]}, "system[0]"),
        ({"messages": [{"role": "user", "content": "x"}], "output_config": {"format": {"type": "xml"}}},
         "output_config.format"),
    ],
)
def test_what_has_no_chat_equivalent_is_refused_by_name(body: dict[str, Any], param: str) -> None:
    assert refused(**body).param == param


def test_max_tokens_is_required_except_for_counting() -> None:
    with pytest.raises(BadRequestError) as caught:
        messages_to_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert caught.value.param == "max_tokens"
    counted = messages_to_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}, require_max_tokens=False)
    assert "max_tokens" not in counted


def test_keys_messages_does_not_define_are_chat_extras_for_the_target() -> None:
    chat = translate(messages=[{"role": "user", "content": "x"}], chat_template_kwargs={"enable_thinking": False})
    assert chat["chat_template_kwargs"] == {"enable_thinking": False}


HYBRID = Thinking(default_on=True, max_budget=81920, preserve=True)  # qwen3.6-plus
STREAM_ONLY = Thinking(default_on=True, stream_only=True, max_budget=38912)  # open-source Qwen3 on Model Studio
ASK = {"type": "enabled", "budget_tokens": 100000}
HI = [{"role": "user", "content": "hi"}]


def test_a_hybrid_model_is_told_not_to_think_when_the_client_did_not_ask() -> None:
    chat = fit_thinking(translate(messages=HI), HYBRID, stream=False)
    assert chat["enable_thinking"] is False  # Anthropic's default is no thinking; Qwen 3.5/3.6's is thinking
    assert "enable_thinking" not in fit_thinking(translate(messages=HI), Thinking(), stream=False)


def test_a_budget_above_the_models_maximum_is_capped() -> None:
    chat = fit_thinking(translate(messages=HI, thinking=ASK), HYBRID, stream=False)
    assert (chat["enable_thinking"], chat["thinking_budget"]) == (True, 81920)
    small = fit_thinking(translate(messages=HI, thinking={"type": "enabled", "budget_tokens": 2048}), HYBRID,
                         stream=True)
    assert small["thinking_budget"] == 2048


def test_a_stream_only_model_answers_a_non_stream_call_without_thinking() -> None:
    chat = fit_thinking(translate(messages=HI, thinking=ASK), STREAM_ONLY, stream=False)
    assert chat["enable_thinking"] is False and "thinking_budget" not in chat
    streamed = fit_thinking(translate(messages=HI, thinking=ASK, stream=True), STREAM_ONLY, stream=True)
    assert (streamed["enable_thinking"], streamed["thinking_budget"]) == (True, 38912)


def test_earlier_reasoning_is_preserved_where_the_model_needs_asking() -> None:
    turns = [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "use ls", "signature": "s"},
                                          {"type": "text", "text": "Run ls."}]},
        {"role": "user", "content": "and hidden ones?"},
    ]
    chat = fit_thinking(translate(messages=turns, thinking=ASK), HYBRID, stream=True)
    assert chat["preserve_thinking"] is True
    assert chat["messages"][1]["reasoning_content"] == "use ls"
    assert "preserve_thinking" not in fit_thinking(translate(messages=turns), HYBRID, stream=True)  # not thinking
    assert "preserve_thinking" not in fit_thinking(translate(messages=HI, thinking=ASK), HYBRID, stream=True)
    no_preserve = Thinking(default_on=True)
    assert "preserve_thinking" not in fit_thinking(translate(messages=turns, thinking=ASK), no_preserve, stream=True)


def test_fitting_leaves_the_translation_itself_alone() -> None:
    chat = translate(messages=HI, thinking=ASK)
    fit_thinking(chat, STREAM_ONLY, stream=False)
    assert (chat["enable_thinking"], chat["thinking_budget"]) == (True, 100000)
