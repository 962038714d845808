"""OpenAI's audio routes: transcriptions (multipart upload) and speech (audio answer), over the same proxy."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Route

from gateway.api.audio_parsing import parse_speech, parse_transcription
from gateway.api.parsing import ParsedRequest
from gateway.api.proxy import ProxyService
from gateway.providers.base import Endpoint


async def _transcription(raw: bytes, headers: Headers) -> ParsedRequest:
    return parse_transcription(raw, headers)


async def _speech(raw: bytes, headers: Headers) -> ParsedRequest:
    return parse_speech(raw, headers)


def audio_routes(proxy: ProxyService) -> list[BaseRoute]:
    """Routed, limited, billed and recorded as chat is; served by deployments of `kind: transcription` / `speech`."""
    return [
        Route("/v1/audio/transcriptions", proxy.route(Endpoint.TRANSCRIPTION, _transcription), methods=["POST"]),
        Route("/v1/audio/speech", proxy.route(Endpoint.SPEECH, _speech), methods=["POST"]),
    ]
