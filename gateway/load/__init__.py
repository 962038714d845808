"""Engine load: pollers of self-hosted engines' own Prometheus metrics, and the load snapshot routing reads."""
