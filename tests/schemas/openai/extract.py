"""Regenerate components.json from OpenAI's OpenAPI document: `python tests/schemas/openai/extract.py SPEC.json`.

Keeps the schemas the tests validate against (ROOTS) and every schema they refer to, drops the prose keywords
(description, example, title), and rewrites OpenAPI's `nullable: true` as a JSON Schema union with null.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = (
    "Response",
    "ResponseStreamEvent",
    "ErrorResponse",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "ImagesResponse",
)
_PROSE = frozenset({"description", "example", "examples", "title"})
_PREFIX = "#/components/schemas/"


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_PREFIX):
                found.add(value.removeprefix(_PREFIX))
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _clean(node: Any, *, in_properties: bool = False) -> Any:
    """Without prose; `nullable: true` as a union with null. Keys under `properties` are names, kept as they are."""
    if isinstance(node, list):
        return [_clean(value) for value in node]
    if not isinstance(node, dict):
        return node
    if in_properties:
        return {key: _clean(value) for key, value in node.items()}
    out = {
        key: _clean(value, in_properties=key == "properties")
        for key, value in node.items()
        if key not in _PROSE and key != "nullable"
    }
    if node.get("nullable") is not True:
        return out
    kind = out.get("type")
    if isinstance(kind, str) and "enum" not in out:
        out["type"] = [kind, "null"]
        return out
    return {"anyOf": [out, {"type": "null"}]}


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        found: set[str] = set()
        _refs(schemas[name], found)
        todo.extend(found - keep)
    return {"components": {"schemas": {name: _clean(schemas[name]) for name in sorted(keep)}}}


if __name__ == "__main__":
    source = json.loads(Path(sys.argv[1]).read_text())
    target = Path(__file__).with_name("components.json")
    target.write_text(json.dumps(extract(source), indent=1, sort_keys=True) + "\n")
