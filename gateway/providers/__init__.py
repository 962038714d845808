"""Providers: adapters that carry one attempt to an upstream (OpenAI-compatible fast path, or litellm)."""
