"""OpenAI Images routes: generations (JSON) and edits (multipart), carried out like every other model route."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Route

from gateway.api.image_request import parse_edit, parse_generation
from gateway.api.parsing import ParsedRequest
from gateway.api.proxy import ProxyService
from gateway.providers.base import Endpoint


async def _generation(raw: bytes, headers: Headers) -> ParsedRequest:
    return parse_generation(raw, Endpoint.IMAGE, headers)


def image_routes(proxy: ProxyService) -> list[BaseRoute]:
    """`POST /v1/images/generations` and `POST /v1/images/edits`: auth, tenant, rules, limits, budgets, fallback,
    metrics and usage as for chat; the aliases they name must be of `kind: image`."""
    return [
        Route("/v1/images/generations", proxy.route(Endpoint.IMAGE, _generation), methods=["POST"]),
        Route("/v1/images/edits", proxy.route(Endpoint.IMAGE_EDIT, parse_edit), methods=["POST"]),
    ]
