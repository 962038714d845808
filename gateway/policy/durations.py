"""Parse the durations a policy writes (`200ms`, `2s`, `1.5s`, `5m`, `1h`, or a bare number of seconds)."""

from __future__ import annotations

import math
import re

_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_HINT = "use seconds, or a number followed by ms, s, m or h, e.g. 200ms, 2s, 1.5s, 5m, 1h"


def parse_duration(value: object) -> float:
    """Return `value` in seconds; raise ValueError with a message a policy author can act on."""
    if isinstance(value, int | float) and not isinstance(value, bool):  # `true` is an int, never a duration
        if value >= 0 and math.isfinite(value):
            return float(value)
        raise ValueError(f"bad duration {value!r}: must be a finite number of seconds, 0 or more")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is not None:
            number, unit = match.groups()
            return float(number) * _SECONDS_PER_UNIT[unit or "s"]
    raise ValueError(f"bad duration {value!r} ({_HINT})")


def format_duration(seconds: float) -> str:
    """The inverse, for humans: 0.2 -> `200ms`, 2.0 -> `2s`, 300.0 -> `5m`."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
