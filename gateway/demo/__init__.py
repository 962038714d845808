"""The demo: simulated upstream LLM servers for `polyroute demo`, the integration tests and the benchmark."""
