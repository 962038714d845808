"""Build the provider adapter for each configured provider; litellm is imported only if one needs it."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Mapping

from gateway.policy.table import Provider as ProviderConfig
from gateway.providers.base import Provider
from gateway.providers.dashscope import DashScopeImageProvider
from gateway.providers.http1_response import UpstreamLimits
from gateway.providers.openai import OpenAICompatibleProvider
from gateway.providers.upstream_proxy import UpstreamProxy

# Builds one provider's adapter from its configuration: the explicit seam for an embedder's or a test's own adapters.
ProviderFactory = Callable[[ProviderConfig], Provider]
# Told (provider name, seconds) how long a request waited for one of a provider's max_connections (metrics).
ConnectionWait = Callable[[str, float], None]


def build_provider(
    config: ProviderConfig,
    proxies: Mapping[str, UpstreamProxy] | None = None,
    limits: UpstreamLimits | None = None,
    connection_wait: ConnectionWait | None = None,
) -> Provider:
    """`proxies` (by upstream scheme) and `limits` apply to `type: openai` and `type: dashscope` providers,
    `connection_wait` to `type: openai`; litellm has its own."""
    if config.type == "litellm":
        module = importlib.import_module("gateway.providers.litellm")
        provider: Provider = module.LiteLLMProvider(config)
        return provider
    if config.type == "dashscope":
        return DashScopeImageProvider(config, proxies=proxies, limits=limits)
    on_wait = functools.partial(connection_wait, config.name) if connection_wait is not None else None
    return OpenAICompatibleProvider(config, proxies=proxies, limits=limits, on_wait=on_wait)


def build_providers(
    configs: dict[str, ProviderConfig],
    reuse: dict[str, tuple[ProviderConfig, Provider]] | None = None,
    proxies: Mapping[str, UpstreamProxy] | None = None,
    limits: UpstreamLimits | None = None,
    factory: ProviderFactory | None = None,
    connection_wait: ConnectionWait | None = None,
) -> dict[str, tuple[ProviderConfig, Provider]]:
    """Adapters by provider name; an adapter whose configuration did not change is kept (its pool stays warm).
    `factory`, when given, builds every adapter instead of polyroute's own."""
    built: dict[str, tuple[ProviderConfig, Provider]] = {}
    for name, config in configs.items():
        previous = (reuse or {}).get(name)
        if previous is not None and previous[0] == config:
            built[name] = previous
        else:
            adapter = factory(config) if factory else build_provider(config, proxies, limits, connection_wait)
            built[name] = (config, adapter)
    return built


async def close_shared_clients() -> None:
    """Close what provider libraries pool process-wide (litellm's clients), if one was ever loaded."""
    module = sys.modules.get("gateway.providers.litellm")
    if module is not None:
        await module.close_shared_clients()
