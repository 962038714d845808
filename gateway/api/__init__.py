"""HTTP surface: OpenAI-compatible routes, health and metrics, admin; thin modules over the proxy service."""
