"""An HTTP proxy between polyroute and its upstreams: which hosts go through it, and how to ask it."""

from __future__ import annotations

import base64
import ipaddress
from urllib.parse import unquote, urlsplit

# Loopback never goes through a proxy unless NO_PROXY is given and leaves it out: a self-hosted model on the same
# machine is not behind the egress proxy.
DEFAULT_NO_PROXY = "localhost,127.0.0.1,::1"


class UpstreamProxy:
    """An `http://` proxy (with optional user:password): CONNECT tunnels for https:// upstreams, absolute-form
    requests for http:// ones. `no_proxy` lists what is reached directly, as NO_PROXY does: host names, domain
    suffixes (`example.com` and `.example.com` both match `api.example.com`), IP addresses and networks
    (`10.0.0.0/8`), an optional `:port`, or `*` for everything."""

    __slots__ = ("_rules", "authorization", "host", "port")

    def __init__(self, url: str, *, no_proxy: str | None = None) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("an upstream proxy must be an http:// URL (the tunnel to an https:// upstream is TLS)")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.authorization = b""
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.authorization = b"proxy-authorization: Basic " + base64.b64encode(pair) + b"\r\n"
        given = DEFAULT_NO_PROXY if no_proxy is None else no_proxy
        self._rules = tuple(rule for rule in (r.strip().lower() for r in given.split(",")) if rule)

    def bypassed(self, host: str, port: int) -> bool:
        """Whether `host:port` is reached directly."""
        host = host.lower()
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for rule in self._rules:
            if rule == "*":
                return True
            name, rule_port = _split_port(rule)
            if rule_port is not None and rule_port != port:
                continue
            if address is not None:
                try:
                    if address in ipaddress.ip_network(name, strict=False):
                        return True
                    continue
                except ValueError:
                    pass
            name = name.lstrip(".")
            if host == name or host.endswith("." + name):
                return True
        return False

    def connect_request(self, host: str, port: int) -> bytes:
        """The CONNECT request for a tunnel to `host:port`."""
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n".encode() + self.authorization + b"\r\n"


def _split_port(rule: str) -> tuple[str, int | None]:
    """`host:port` → (host, port); a bare IPv6 address or network keeps its colons."""
    if rule.startswith("["):  # [::1]:8080
        end = rule.find("]")
        rest = rule[end + 1 :]
        return rule[1:end], int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    head, sep, tail = rule.rpartition(":")
    if sep and tail.isdigit() and ":" not in head:
        return head, int(tail)
    return rule, None


def proxies_for(
    *, http_proxy: str | None, https_proxy: str | None, no_proxy: str | None
) -> dict[str, UpstreamProxy]:
    """The proxy for each upstream scheme, from the usual HTTP_PROXY, HTTPS_PROXY and NO_PROXY values."""
    proxies = {}
    for scheme, url in (("http", http_proxy), ("https", https_proxy)):
        if url:
            try:
                proxies[scheme] = UpstreamProxy(url, no_proxy=no_proxy)
            except ValueError as exc:
                raise ValueError(f"{scheme.upper()}_PROXY: {exc}") from None
    return proxies
