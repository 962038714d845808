"""Build the provider adapter for each configured provider; litellm is imported only if one needs it."""

from __future__ import annotations

import importlib
import sys

from gateway.policy.table import Provider as ProviderConfig
from gateway.providers.base import Provider
from gateway.providers.openai import OpenAICompatibleProvider


def build_provider(config: ProviderConfig) -> Provider:
    if config.type == "litellm":
        module = importlib.import_module("gateway.providers.litellm")
        provider: Provider = module.LiteLLMProvider(config)
        return provider
    return OpenAICompatibleProvider(config)


def build_providers(
    configs: dict[str, ProviderConfig], reuse: dict[str, tuple[ProviderConfig, Provider]] | None = None
) -> dict[str, tuple[ProviderConfig, Provider]]:
    """Adapters by provider name; an adapter whose configuration did not change is kept (its pool stays warm)."""
    built: dict[str, tuple[ProviderConfig, Provider]] = {}
    for name, config in configs.items():
        previous = (reuse or {}).get(name)
        if previous is not None and previous[0] == config:
            built[name] = previous
        else:
            built[name] = (config, build_provider(config))
    return built


async def close_shared_clients() -> None:
    """Close what provider libraries pool process-wide (litellm's clients), if one was ever loaded."""
    module = sys.modules.get("gateway.providers.litellm")
    if module is not None:
        await module.close_shared_clients()
