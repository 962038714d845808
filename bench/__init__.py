"""The reproducible benchmark: polyroute against a plain pass-through and LiteLLM's proxy on one machine."""
