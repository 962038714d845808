"""Shadow evaluation's comparison of two answers to one request: agreement in text, JSON and tool calls."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# difflib is quadratic in the worst case: texts are compared on their first characters only (a bound on time).
MAX_COMPARED_CHARS = 4000
_SPACE = re.compile(r"\s+")
_JSON_FORMATS = frozenset({"json_object", "json_schema"})


@dataclass(frozen=True, slots=True)
class Answer:
    """What one side of a pair produced: its text and tool calls, or its error class."""

    text: str = ""
    tool_calls: tuple[tuple[str, str], ...] = ()  # (name, arguments as sent)
    error: str | None = None  # an ErrorClass value, or "status_<n>" for a primary that failed without one


@dataclass(frozen=True, slots=True)
class Agreement:
    """How far a shadow answer agrees with the primary's; None where the request did not ask for it."""

    exact: bool
    similarity: float
    json_valid: bool | None
    json_same_keys: bool | None
    tool_names: bool | None
    tool_arguments: bool | None


def answer_of_body(body: bytes) -> Answer:
    """The text and tool calls of a non-stream chat or completion answer (an unreadable body has none)."""
    try:
        data = orjson.loads(body)
        choice = data["choices"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return Answer()
    if not isinstance(choice, dict):
        return Answer()
    message = choice.get("message")
    if not isinstance(message, dict):
        return Answer(text=_str(choice.get("text")))
    calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
    return Answer(text=_str(message.get("content")), tool_calls=tuple(_call(c) for c in calls or ()))


def answer_of_stream(chunks: Iterable[bytes]) -> Answer:
    """The text and tool calls of a relayed stream (its SSE events as relayed), joined from the deltas."""
    text: list[str] = []
    names: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    for line in b"".join(chunks).split(b"\n"):
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            continue
        try:
            choice = orjson.loads(line[5:])["choices"][0]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            continue
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            text.append(_str(choice.get("text")))
            continue
        text.append(_str(delta.get("content")))
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            index = call.get("index", 0) if isinstance(call.get("index"), int) else 0
            function = call.get("function")
            if not isinstance(function, dict):
                function = {}
            if function.get("name"):
                names[index] = _str(function["name"])
            arguments.setdefault(index, []).append(_str(function.get("arguments")))
    calls = tuple((names.get(i, ""), "".join(arguments.get(i, []))) for i in sorted(names.keys() | arguments.keys()))
    return Answer(text="".join(text), tool_calls=calls)


def compare(primary: Answer, shadow: Answer, body: Mapping[str, Any]) -> Agreement:
    """The agreement of two successful answers to the request `body`."""
    first, second = normalised(primary.text), normalised(shadow.text)
    similarity = 1.0 if first == second else difflib.SequenceMatcher(None, first, second).ratio()
    json_valid = same_keys = None
    if _asks_for_json(body):
        theirs, ours = _json(shadow.text), _json(primary.text)
        json_valid = theirs is not None
        same_keys = isinstance(theirs, dict) and isinstance(ours, dict) and theirs.keys() == ours.keys()
    names = arguments = None
    if primary.tool_calls or shadow.tool_calls:
        names = [n for n, _ in primary.tool_calls] == [n for n, _ in shadow.tool_calls]
        arguments = names and all(
            _json(a) == _json(b) for (_, a), (_, b) in zip(primary.tool_calls, shadow.tool_calls, strict=True)
        )
    return Agreement(
        exact=primary.text == shadow.text and primary.tool_calls == shadow.tool_calls,
        similarity=round(similarity, 4),
        json_valid=json_valid,
        json_same_keys=same_keys,
        tool_names=names,
        tool_arguments=arguments,
    )


def normalised(text: str) -> str:
    """Whitespace collapsed, case folded, bounded in length: the form texts are compared in."""
    return _SPACE.sub(" ", text[: MAX_COMPARED_CHARS * 2]).strip().casefold()[:MAX_COMPARED_CHARS]


def _asks_for_json(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in _JSON_FORMATS


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _call(call: Any) -> tuple[str, str]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return "", ""
    return _str(function.get("name")), _str(function.get("arguments"))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
