"""OpenAI's audio routes: transcriptions (multipart upload) and speech (audio answer), over the same proxy."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from gateway.api.audio_parsing import parse_speech, parse_transcription
from gateway.api.proxy import ProxyService
from gateway.providers.base import Endpoint


def audio_routes(proxy: ProxyService) -> list[BaseRoute]:
    """Routed, limited, billed and recorded as chat is; served by deployments of `kind: transcription` / `speech`."""
    return [
        Route("/v1/audio/transcriptions", proxy.route(Endpoint.TRANSCRIPTION, parse_transcription), methods=["POST"]),
        Route("/v1/audio/speech", proxy.route(Endpoint.SPEECH, parse_speech), methods=["POST"]),
    ]
