"""HTTP/1.1 request heads for the upstream client: checked headers, an origin's request line and Host, written once."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from gateway.providers.upstream_proxy import UpstreamProxy

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\r\n\0]")
_URL_SAFE = "/%:@!$&'()*+,;=?~-._"  # left as they are in a request target; anything else is percent-encoded
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})  # the client writes these


class InvalidHeader(ValueError):
    """A header name or value that cannot be sent as it is (it would split or end the header block)."""


class HeaderBlock:
    """Request headers checked and encoded once, for all the requests that send them."""

    __slots__ = ("authorization", "data")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.data = _encode(headers)
        self.authorization = any(name.lower() == "authorization" for name in headers)

    def plus(self, name: str, value: str) -> HeaderBlock:
        """These headers and one more (checked now); a name given twice is sent twice."""
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise InvalidHeader(f"header {name[:40]!r} cannot be sent: invalid characters")
        if name.lower() in _OWN_HEADERS:
            return self
        block = HeaderBlock.__new__(HeaderBlock)
        block.data = b"%s%s: %s\r\n" % (self.data, name.encode(), value.encode())
        block.authorization = self.authorization or name.lower() == "authorization"
        return block


class Origin:
    """Where to connect, and the request-line prefix and Host header of one URL (and its user:password, if any,
    as basic authorization). Through a proxy: an https:// origin is reached by a tunnel, an http:// one by asking
    the proxy for the absolute URL."""

    __slots__ = ("authorization", "host", "key", "port", "prefix", "ssl", "via")

    def __init__(self, url: str, proxies: Mapping[str, UpstreamProxy]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        self.ssl = parts.scheme == "https"
        self.host = parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna").decode()
        self.port = parts.port or (443 if self.ssl else 80)
        proxy = proxies.get(parts.scheme)
        self.via = proxy if proxy is not None and not proxy.bypassed(self.host, self.port) else None
        default_port = self.port == (443 if self.ssl else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if default_port else f"{host}:{self.port}"
        target = quote(parts.path or "/", safe=_URL_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_URL_SAFE)
        if self.via is not None and not self.ssl:  # one pool of connections to the proxy for every such origin
            self.key = ("http-proxy", self.via.host, self.via.port)
            self.prefix = f"POST http://{authority}{target} HTTP/1.1\r\nhost: {authority}\r\n".encode()
            self.prefix += self.via.authorization
        else:
            self.key = (parts.scheme, self.host, self.port)
            self.prefix = f"POST {target} HTTP/1.1\r\nhost: {authority}\r\n".encode()
        self.authorization = parts.username is not None
        if self.authorization:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
            self.prefix += b"authorization: Basic " + base64.b64encode(pair) + b"\r\n"


def _encode(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise InvalidHeader(f"header {name[:40]!r} cannot be sent: invalid characters")
        if name.lower() not in _OWN_HEADERS:
            lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode()
