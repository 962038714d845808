"""Faults a simulated upstream can inject: parsed from `x-sim-fault` or queued through `POST /_sim/faults`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# Faults answered with the flavor's error body (Model Studio names; other flavors answer in their own words).
NAMED_ERRORS = frozenset(
    {
        "throttling",
        "insufficient_quota",
        "data_inspection",
        "context_overflow",
        "invalid_key",
        "internal",
        "arrearage",
        "quota_exhausted",
    }
)
FAULT_KINDS = NAMED_ERRORS | {
    "status",
    "slow_first_token",
    "stall_mid_stream",
    "reset",
    "reset_mid_stream",
    "malformed_json",
    "malformed_sse",
    "inband_error",
    "no_usage",
    "delay",
    "task_failed",
    "task_stuck",
}
_PARAMS = frozenset({"count", "model", "status", "code", "message", "retry_after", "delay", "after"})
FAULT_HEADER = "x-sim-fault"


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected misbehaviour; `count` is how many requests it still applies to (-1: forever).

    status            the flavor's error body with HTTP `status` (default 500), optional `code`, `message`,
                      `retry_after` (any error fault also takes `message` and `retry_after`)
    throttling, insufficient_quota, data_inspection, context_overflow, invalid_key, internal
                      Model Studio's named errors (429, 429, 400, 400, 401, 500), in each flavor's words
    arrearage         Model Studio's `Arrearage` 400: the account is overdue (every flavor answers it so)
    quota_exhausted   Model Studio's 429 "Free allocated quota exceeded.": a free tier spent, permanent
    slow_first_token  sleep `delay` s before any byte (non-stream) or before the first frame (stream)
    stall_mid_stream  send `after` frames, sleep `delay` s, continue (non-stream: sleep, then answer)
    reset             drop the connection (TCP RST) without any response
    reset_mid_stream  send `after` frames, then drop the connection: no [DONE] (non-stream: half the body)
    malformed_json    200 with a body that is not JSON
    malformed_sse     200 event stream of garbage lines, then close
    inband_error      200 stream: `after` frames, `data: {"error": ...}`, `data: [DONE]` (non-stream: 200 error body)
    no_usage          never report usage, even when asked with stream_options.include_usage
    delay             a slow but steady stream: sleep `delay` s before each frame (non-stream: once)
    task_failed       Model Studio image task: PENDING, RUNNING, then FAILED with `code` and `message`
    task_stuck        Model Studio image task: RUNNING for ever (the gateway's `total` timeout ends the wait)
    """

    kind: str
    count: int = 1
    model: str | None = None  # only requests for this model consume it
    status: int = 500
    code: str | int | None = None
    message: str | None = None
    retry_after: str | None = None  # sent verbatim as Retry-After
    delay: float = 1.0  # seconds, for the slow / stall / delay faults
    after: int = 2  # stream frames sent before a mid-stream fault strikes


def parse_fault(spec: Mapping[str, Any]) -> Fault:
    """A Fault from its JSON form `{"fault": "...", "count": N, "model": ..., **params}`; ValueError if invalid."""
    kind = spec.get("fault")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
    unknown = set(spec) - _PARAMS - {"fault"}
    if unknown:
        raise ValueError(f"fault {kind!r}: unknown parameters {sorted(unknown)}")
    fault = Fault(kind=str(kind))
    try:
        if "count" in spec:
            fault = replace(fault, count=int(spec["count"]))
        if spec.get("model") is not None:
            fault = replace(fault, model=str(spec["model"]))
        if "status" in spec:
            fault = replace(fault, status=int(spec["status"]))
        if spec.get("code") is not None:
            code = spec["code"]
            fault = replace(fault, code=code if isinstance(code, int) else str(code))
        if spec.get("message") is not None:
            fault = replace(fault, message=str(spec["message"]))
        if spec.get("retry_after") is not None:
            fault = replace(fault, retry_after=str(spec["retry_after"]))
        if "delay" in spec:
            fault = replace(fault, delay=float(spec["delay"]))
        if "after" in spec:
            fault = replace(fault, after=int(spec["after"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"fault {kind!r}: bad parameter: {exc}") from None
    if fault.count == 0 or fault.count < -1:
        raise ValueError(f"fault {kind!r}: count must be positive or -1 (forever)")
    if not 100 <= fault.status <= 599:
        raise ValueError(f"fault {kind!r}: status must be an HTTP status")
    if fault.delay < 0 or fault.after < 0:
        raise ValueError(f"fault {kind!r}: delay and after must not be negative")
    return fault


def parse_fault_header(value: str) -> Fault:
    """A Fault from `x-sim-fault: <fault>[;param=value]...`; numbers stay strings until parse_fault converts them."""
    kind, *pairs = (part.strip() for part in value.split(";"))
    spec: dict[str, Any] = {"fault": kind}
    for pair in pairs:
        if not pair:
            continue
        key, sep, val = pair.partition("=")
        if not sep:
            raise ValueError(f"{FAULT_HEADER}: expected param=value, got {pair!r}")
        spec[key.strip()] = val.strip()
    return parse_fault(spec)


class FaultQueue:
    """Faults queued in order; each request consumes the first one that matches its model."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def extend(self, faults: list[Fault]) -> None:
        self._faults.extend(faults)

    def clear(self) -> None:
        self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [{"fault": f.kind, "count": f.count, "model": f.model} for f in self._faults]

    def take(self, model: str | None) -> Fault | None:
        """The fault this request gets, if any, counting it down."""
        if not self._faults:
            return None
        for index, fault in enumerate(self._faults):
            if fault.model is not None and fault.model != model:
                continue
            if fault.count == 1:
                del self._faults[index]
            elif fault.count > 1:
                self._faults[index] = replace(fault, count=fault.count - 1)
            return fault
        return None
