"""Model Studio's native image API (DashScope) as a provider: submit, poll the task or call synchronously, and
answer in OpenAI's Images shape; `b64_json` is fetched from the image URL the provider returned.

Failures go through providers/failures.py like every other provider's: an HTTP error body by `upstream_error`
(DashScope's `{"code", "message"}`: `DataInspectionFailed` is a content-policy refusal, `Throttling` a rate limit),
a task that ended without images by `task_failure`, the transport's exceptions by `transport_failure`.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.policy.table import Provider
from gateway.providers.base import Endpoint, UpstreamCall, UpstreamReply, UpstreamStream, Usage
from gateway.providers.dashscope_images import (
    GENERATION_PATH,
    SYNTHESIS_PATH,
    TASK_PATH,
    TASK_RUNNING,
    TASK_SUCCEEDED,
    dashscope_size,
    generation_body,
    generation_urls,
    image_api,
    images_response,
    task_body,
    task_id,
    task_state,
)
from gateway.providers.failures import TRANSPORT_ERRORS, task_failure, transport_failure, upstream_error
from gateway.providers.http1 import HeaderBlock, HTTPClient
from gateway.providers.http1_response import UpstreamLimits
from gateway.providers.images import IMAGE_ENDPOINTS, image_variant
from gateway.providers.upstream_proxy import UpstreamProxy

FIRST_POLL_S = 0.1  # the first task query waits this long, each next one twice as long as the last ...
MAX_POLL_S = 2.0  # ... up to this; the whole wait ends with the request's `total` timeout
KEEPALIVE_S = 60.0


class DashScopeImageProvider:
    """One `type: dashscope` provider: its `base_url` is the native API root (`https://<host>/api/v1`)."""

    def __init__(
        self,
        provider: Provider,
        *,
        proxies: Mapping[str, UpstreamProxy] | None = None,
        limits: UpstreamLimits | None = None,
    ) -> None:
        self.name = provider.name
        self._base = (provider.base_url or "").rstrip("/")
        parts = urlsplit(self._base)
        self._host = (parts.hostname or "").lower()
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._scheme = parts.scheme
        headers = {"content-type": "application/json", "accept": "application/json", **dict(provider.headers)}
        if provider.api_key:
            headers["authorization"] = f"Bearer {provider.api_key}"
        self._sync = HeaderBlock(headers)
        self._async = HeaderBlock({**headers, "x-dashscope-async": "enable"})
        self._query = HeaderBlock({k: v for k, v in headers.items() if k != "content-type"})
        self._fetch = HeaderBlock({"accept": "image/*"})  # the provider's credentials never go to an image host
        self._http = HTTPClient(
            max_connections=provider.max_connections, keepalive_s=KEEPALIVE_S, proxies=proxies,
            limits=limits or UpstreamLimits(),
        )

    async def close(self) -> None:
        await self._http.close()

    async def open_stream(self, call: UpstreamCall) -> UpstreamStream:
        raise UpstreamError(f"provider {self.name} (Model Studio images) does not stream",
                            error_class=ErrorClass.BAD_REQUEST)

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        if call.endpoint not in IMAGE_ENDPOINTS:
            raise UpstreamError(f"provider {self.name} serves Model Studio's image API only",
                                error_class=ErrorClass.NOT_FOUND)
        total = call.timeouts.total_s
        try:
            async with asyncio.timeout(total):
                urls = await self._generate(call)
                items = await self._deliver(urls, call)
        except TRANSPORT_ERRORS as exc:
            raise transport_failure(exc, timed_out=f"no images within the total timeout of {total:g}s",
                                    connect_s=call.timeouts.connect_s) from exc
        size = dashscope_size(call.deployment.model, call.body.get("size"))
        body = orjson.dumps(images_response(items, size))
        return UpstreamReply(body=body, usage=Usage(images=len(items), image_variant=image_variant(call.body)))

    async def _generate(self, call: UpstreamCall) -> list[str]:
        model = call.deployment.model
        if call.endpoint is Endpoint.IMAGE_EDIT:
            data = await self._post(GENERATION_PATH, generation_body(model, call.body, call.body["image"]), call)
            return _some(generation_urls(data))
        if image_api(model, call.deployment.image_api) == "sync":
            return _some(generation_urls(await self._post(GENERATION_PATH, generation_body(model, call.body), call)))
        submitted = task_id(await self._post(SYNTHESIS_PATH, task_body(model, call.body), call, self._async))
        if submitted is None:
            raise UpstreamError("the image task was not accepted: its answer has no task id",
                                error_class=ErrorClass.SERVER_ERROR)
        return await self._poll(submitted, call)

    async def _poll(self, task: str, call: UpstreamCall) -> list[str]:
        """Query the task with a doubling wait (bounded by MAX_POLL_S) until it ends; `send`'s timeout bounds it all."""
        delay = FIRST_POLL_S
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL_S)
            resp = await self._http.get(
                f"{self._base}{TASK_PATH}{task}", self._query,
                connect_timeout_s=call.timeouts.connect_s, total_timeout_s=call.timeouts.total_s,
            )
            state, urls, code, message = task_state(await self._json(resp, call))
            if state in TASK_RUNNING:
                continue
            if state == TASK_SUCCEEDED:
                return _some(urls)
            raise task_failure(state, code, message)

    async def _post(
        self, path: str, body: dict[str, Any], call: UpstreamCall, block: HeaderBlock | None = None
    ) -> Any:
        headers = block or self._sync
        if call.request_id:
            headers = headers.plus("x-request-id", call.request_id)
        resp = await self._http.post(
            self._base + path, orjson.dumps(body), headers,
            connect_timeout_s=call.timeouts.connect_s, total_timeout_s=call.timeouts.total_s,
        )
        return await self._json(resp, call)

    @staticmethod
    async def _json(resp: Any, call: UpstreamCall) -> Any:
        try:
            raw = await resp.read()
        finally:
            resp.release()
        if resp.status >= 400:
            raise upstream_error(resp.status, raw, resp.headers.get("retry-after"), call.deployment.name)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("Model Studio answered with a body that is not JSON",
                                error_class=ErrorClass.SERVER_ERROR) from exc

    async def _deliver(self, urls: list[str], call: UpstreamCall) -> list[tuple[str, str]]:
        if call.body.get("response_format") != "b64_json":
            return [("url", url) for url in urls]
        return [("b64_json", base64.b64encode(await self._image(url, call)).decode()) for url in urls]

    async def _image(self, url: str, call: UpstreamCall) -> bytes:
        """The bytes behind an image URL the provider returned, read under the upstream body limit."""
        if not self.may_fetch(url):
            raise UpstreamError(
                f"the image URL's host {urlsplit(url).hostname or '?'} is not Model Studio's: not fetched",
                error_class=ErrorClass.SERVER_ERROR,
            )
        resp = await self._http.get(url, self._fetch, connect_timeout_s=call.timeouts.connect_s,
                                    total_timeout_s=call.timeouts.total_s)
        try:
            data = await resp.read()
        finally:
            resp.release()
        if resp.status != 200:
            raise UpstreamError(f"fetching a generated image answered HTTP {resp.status}",
                                error_class=ErrorClass.SERVER_ERROR, upstream_status=resp.status)
        return bytes(data)

    def may_fetch(self, url: str) -> bool:
        """Only URLs of the provider itself: its own host and port, or (for a DNS name) a host under the same
        registered domain on the scheme's default port (Model Studio's images are on `*.aliyuncs.com` storage hosts,
        whether the API is its regional host or a workspace's). An answer pointing anywhere else (an internal
        address, another service) is never fetched."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host or (parts.scheme == "http" and self._scheme == "https"):
            return False
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if host == self._host:
            return port == self._port
        domain = _registered_domain(self._host)
        return domain is not None and host.endswith("." + domain) and port == (443 if parts.scheme == "https" else 80)


# Second-level labels under which each name is a registry of its own (`example.co.uk`): the domain is one label more.
_SHARED_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "net", "org"})


def _registered_domain(host: str) -> str | None:
    """`dashscope-intl.aliyuncs.com` -> `aliyuncs.com`; None for an IP address or a name with too few labels."""
    if _is_ip(host):
        return None
    labels = host.split(".")
    keep = 3 if len(labels) >= 3 and labels[-2] in _SHARED_SECOND_LEVEL else 2
    return ".".join(labels[-keep:]) if len(labels) > keep else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _some(urls: list[str]) -> list[str]:
    if not urls:
        raise UpstreamError("Model Studio answered without any image", error_class=ErrorClass.SERVER_ERROR)
    return urls
