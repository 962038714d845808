"""Routing: carrying a RoutePlan out — attempts, retries, fallback, circuit breakers, stream relay."""
