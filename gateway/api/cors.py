"""CORS for browser apps calling /v1: Starlette's CORSMiddleware, plus header patterns and silence for strangers."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What a browser page may send: the OpenAI and Anthropic SDKs' own headers and polyroute's request hints.
# `anthropic-dangerous-direct-browser-access` is what Anthropic's JS SDK sends when used from a page.
ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-request-id",
)
# Families of headers allowed by prefix (the SDKs add new x-stainless-* headers from release to release).
ALLOWED_HEADER_PREFIXES = ("x-polyroute-", "x-stainless-")
# What a page may read from a response: every header polyroute itself sends (see api/responses.py, api/proxy.py).
EXPOSED_HEADERS = (
    "x-polyroute-route",
    "x-polyroute-deployment",
    "x-polyroute-attempts",
    "x-polyroute-fallback-reason",
    "x-polyroute-cost-usd",
    "x-request-id",
    "retry-after",
)
PATH_PREFIX = "/v1/"


class BrowserCORS(CORSMiddleware):
    """CORS on the /v1 routes only, for the origins in POLYROUTE_CORS_ORIGINS (or every origin with `*`).

    Starlette answers preflights and adds the headers to every response, errors and streams included, because it
    wraps `send`. Two differences: a preflight may ask for any `x-polyroute-*` / `x-stainless-*` header (Starlette
    compares names exactly), and a response to an origin not in the list carries no CORS header at all (Starlette
    would still send Access-Control-Expose-Headers). Credentials (cookies) are never allowed: clients send their
    key in a header, and with `*` the browser requires exactly that.
    """

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=("GET", "POST"),
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            allow_credentials=False,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PATH_PREFIX):
            await super().__call__(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        requested = request_headers.get("access-control-request-headers")
        names = [name.strip().lower() for name in (requested or "").split(",")]
        known = self.allow_headers
        by_prefix = [name for name in names if name not in known and name.startswith(ALLOWED_HEADER_PREFIXES)]
        if not by_prefix:
            return super().preflight_response(request_headers)
        rest = request_headers.mutablecopy()
        del rest["access-control-request-headers"]
        if others := [name for name in names if name not in by_prefix]:
            rest["access-control-request-headers"] = ", ".join(others)
        response = super().preflight_response(rest)
        if response.status_code == 200:
            allowed = response.headers.get("access-control-allow-headers")
            response.headers["access-control-allow-headers"] = ", ".join(filter(None, [allowed, *by_prefix]))
        return response

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        if message["type"] != "http.response.start":  # a stream's chunks pass untouched
            await send(message)
            return
        origin = request_headers.get("origin")
        if origin is None or self.is_allowed_origin(origin):
            await super().send(message, send, request_headers)
            return
        message.setdefault("headers", [])
        # The answer differs by origin: no cache may serve it to another one.
        MutableHeaders(scope=message).append("vary", "Origin")
        await send(message)
