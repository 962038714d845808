"""Validate what polyroute writes against OpenAI's published schemas (tests/schemas/openai, see its README)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_COMPONENTS = Path(__file__).parents[1] / "schemas" / "openai" / "components.json"
_URI = "urn:openai-openapi"


@cache
def _registry() -> Registry[Any]:
    document = json.loads(_COMPONENTS.read_text())
    return Registry().with_resource(_URI, Resource.from_contents(document, default_specification=DRAFT202012))


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{name}"}, registry=_registry())


def schema_errors(name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the schema `name` (empty when it conforms), each with the path it is at."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors]
