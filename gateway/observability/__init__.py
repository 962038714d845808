"""Metrics: names declared once (names.py) and the Metrics object the app builds (metrics.py)."""
