"""A Chat Completions stream translated, chunk by chunk, into the Responses API's stream of typed SSE events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.protocols import responses_objects as objects


@dataclass
class _Message:
    """An open or closed assistant `message` item; its parts are [kind, text] in the order they arrived."""

    id: str
    output_index: int
    parts: list[list[str]] = field(default_factory=list)
    part_open: bool = False
    done: bool = False

    def item(self, status: str) -> dict[str, Any]:
        return objects.message_item(self.id, [(kind, text) for kind, text in self.parts], status)


@dataclass
class _Reasoning:
    id: str
    output_index: int
    text: str = ""
    done: bool = False

    def item(self, status: str) -> dict[str, Any]:
        return objects.reasoning_item(self.id, self.text, status)


@dataclass
class _Call:
    id: str
    output_index: int
    call_id: str
    name: str
    arguments: str = ""
    done: bool = False

    def item(self, status: str) -> dict[str, Any]:
        return objects.function_call_item(self.id, self.call_id, self.name, self.arguments, status)


_Item = _Message | _Reasoning | _Call


class ResponsesStreamTranslator:
    """Feeds on parsed chat chunks and returns the Responses events each one causes, as SSE wire bytes.

    Items follow one another as in the Responses API: reasoning, then text, then tool calls, each closed before
    the next kind opens. Tool calls stay open until the end, because a chat stream may interleave the argument
    deltas of several calls (by `index`); each call's deltas keep its own `output_index` and `item_id`.
    """

    def __init__(self, *, request: dict[str, Any], response_id: str, model: str) -> None:
        self._request = request
        self._response_id = response_id
        self._model = model
        self._created_at = int(time.time())
        self._sequence = 0
        self._started = False
        self._ended = False
        self._output: list[_Item] = []
        self._message: _Message | None = None
        self._reasoning: _Reasoning | None = None
        self._calls: dict[int, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    def start(self) -> list[bytes]:
        """`response.created` and `response.in_progress`; empty if they were already sent."""
        if self._started:
            return []
        self._started = True
        snapshot = self._response("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events for one parsed chat chunk, including the final usage-only chunk."""
        events = self.start()
        if self._ended:
            return events
        if isinstance(chunk.get("usage"), dict):
            self._usage = objects.usage(chunk["usage"])
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return events
        choice = choices[0]
        delta = objects.as_object(choice.get("delta"))
        # vLLM and Qwen's cloud send reasoning as `reasoning_content`; newer vLLM and OpenRouter as `reasoning`.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events += self._reasoning_delta(reasoning)
        for kind, key in (("output_text", "content"), ("refusal", "refusal")):
            text = delta.get(key)
            if isinstance(text, str) and text:
                events += self._text_delta(kind, text)
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for tool_call in tool_calls:
                if isinstance(tool_call, dict):
                    events += self._call_delta(tool_call)
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        return events

    def finish(self, estimate: dict[str, Any] | None = None) -> list[bytes]:
        """Close every open item, then `response.completed` (or `response.incomplete`) with the whole response.

        `estimate` (a chat `usage`) is the usage reported when the upstream reported none.
        """
        events = self.start()
        if self._ended:
            return events
        self._ended = True
        status, reason = objects.outcome(self._finish_reason)
        last = self._output[-1] if self._output else None
        # A cut-off response cut its last item short; the items before it were whole.
        closing = {
            id(item): "incomplete" if status == "incomplete" and item is last else "completed" for item in self._output
        }
        events += self._close_reasoning(closing)
        events += self._close_message(closing)
        for call in sorted(self._calls.values(), key=lambda c: c.output_index):
            events += self._close_call(call, closing[id(call)])
        output = [item.item(closing[id(item)]) for item in self._output]
        kind = "response.completed" if status == "completed" else "response.incomplete"
        response = self._response(status, output=output, usage=self._final_usage(estimate), incomplete_reason=reason)
        events.append(self._event(kind, response=response))
        return events

    def fail(self, message: str, code: str, estimate: dict[str, Any] | None = None) -> list[bytes]:
        """The `error` event, then `response.failed` carrying what was produced so far."""
        events = self.start()
        if self._ended:
            return events
        self._ended = True
        events.append(self._event("error", code=code, message=message, param=None))
        output = [item.item("completed" if item.done else "incomplete") for item in self._output]
        response = self._response(
            "failed", output=output, usage=self._final_usage(estimate), error=objects.failure(message, code)
        )
        events.append(self._event("response.failed", response=response))
        return events

    def _final_usage(self, estimate: dict[str, Any] | None) -> dict[str, Any] | None:
        return self._usage if self._usage is not None else objects.usage(estimate)

    def _reasoning_delta(self, text: str) -> list[bytes]:
        events: list[bytes] = []
        item = self._reasoning
        if item is None:
            events += self._close_message({})
            item = self._reasoning = _Reasoning(self._next_id("rs"), len(self._output))
            self._output.append(item)
            events.append(self._added(item))
            events.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    **self._at(item),
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        item.text += text
        events.append(
            self._event("response.reasoning_summary_text.delta", **self._at(item), summary_index=0, delta=text)
        )
        return events

    def _text_delta(self, kind: str, text: str) -> list[bytes]:
        events = self._close_reasoning({})
        item = self._message
        if item is None:
            item = self._message = _Message(self._next_id("msg"), len(self._output))
            self._output.append(item)
            events.append(self._added(item))
        if not item.parts or item.parts[-1][0] != kind or not item.part_open:
            events += self._close_part(item)
            item.parts.append([kind, ""])
            item.part_open = True
            events.append(
                self._event(
                    "response.content_part.added",
                    **self._at(item),
                    content_index=len(item.parts) - 1,
                    part=objects.content_part(kind, ""),
                )
            )
        item.parts[-1][1] += text
        at = {**self._at(item), "content_index": len(item.parts) - 1}
        if kind == "refusal":
            events.append(self._event("response.refusal.delta", **at, delta=text))
        else:
            events.append(self._event("response.output_text.delta", **at, delta=text, logprobs=[]))
        return events

    def _call_delta(self, tool_call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        index = tool_call.get("index")
        if not isinstance(index, int):
            # Some servers omit `index` when they send each call whole; every such delta is then a new call.
            index = len(self._calls)
        function = objects.as_object(tool_call.get("function"))
        call = self._calls.get(index)
        if call is None:
            events += self._close_reasoning({})
            events += self._close_message({})
            output_index = len(self._output)
            call_id = tool_call.get("id")
            call = _Call(
                id=objects.item_id("fc", self._response_id, output_index),
                output_index=output_index,
                call_id=call_id
                if isinstance(call_id, str) and call_id
                else objects.item_id("call", self._response_id, output_index),
                name=str(function.get("name") or ""),
            )
            self._calls[index] = call
            self._output.append(call)
            events.append(self._added(call))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments += arguments
            events.append(self._event("response.function_call_arguments.delta", **self._at(call), delta=arguments))
        return events

    def _close_reasoning(self, closing: dict[int, str]) -> list[bytes]:
        item = self._reasoning
        if item is None:
            return []
        self._reasoning = None
        item.done = True
        part = {"type": "summary_text", "text": item.text}
        return [
            self._event("response.reasoning_summary_text.done", **self._at(item), summary_index=0, text=item.text),
            self._event("response.reasoning_summary_part.done", **self._at(item), summary_index=0, part=part),
            self._done(item, closing.get(id(item), "completed")),
        ]

    def _close_message(self, closing: dict[int, str]) -> list[bytes]:
        item = self._message
        if item is None:
            return []
        self._message = None
        item.done = True
        return [*self._close_part(item), self._done(item, closing.get(id(item), "completed"))]

    def _close_part(self, item: _Message) -> list[bytes]:
        if not item.part_open:
            return []
        item.part_open = False
        kind, text = item.parts[-1]
        at = {**self._at(item), "content_index": len(item.parts) - 1}
        if kind == "refusal":
            done = self._event("response.refusal.done", **at, refusal=text)
        else:
            done = self._event("response.output_text.done", **at, text=text, logprobs=[])
        return [done, self._event("response.content_part.done", **at, part=objects.content_part(kind, text))]

    def _close_call(self, call: _Call, status: str) -> list[bytes]:
        call.done = True
        return [
            self._event(
                "response.function_call_arguments.done", **self._at(call), name=call.name, arguments=call.arguments
            ),
            self._done(call, status),
        ]

    def _added(self, item: _Item) -> bytes:
        return self._event("response.output_item.added", output_index=item.output_index, item=item.item("in_progress"))

    def _done(self, item: _Item, status: str) -> bytes:
        return self._event("response.output_item.done", output_index=item.output_index, item=item.item(status))

    @staticmethod
    def _at(item: _Item) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.output_index}

    def _next_id(self, prefix: str) -> str:
        return objects.item_id(prefix, self._response_id, len(self._output))

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        return objects.response_object(
            request=self._request,
            response_id=self._response_id,
            model=self._model,
            created_at=self._created_at,
            status=status,
            **{"output": [], **fields},
        )

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
