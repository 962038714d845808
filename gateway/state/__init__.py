"""Shared state: rate limits, budgets, circuit breakers and usage records, in-process or in Redis."""
