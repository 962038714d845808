"""Reading a gateway's /metrics as Prometheus does: its text format parsed by prometheus-client's own parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]


def scrape(url: str) -> list[Sample]:
    """Every sample at `url`, which must answer in Prometheus's text format."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(samples: list[Sample], name: str, **match: str) -> float:
    """The sum of `name`'s samples whose labels include `match`."""
    return sum(v for n, labels, v in samples if n == name and match.items() <= labels.items())
