"""Metrics: names declared once (names.py), their HELP text and buckets (catalog.py), bounded label values
(labels.py) and the Metrics object the app builds (metrics.py)."""
