"""polyroute: an OpenAI-compatible gateway that routes each request by declarative policy."""

__version__ = "0.1.0"
