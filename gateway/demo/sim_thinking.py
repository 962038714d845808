"""Whether a simulated model thinks for one chat request, or the 400 Model Studio answers to what it refuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.demo.sim_flavors import Flavor, SimError

# Model Studio's words for the refusals: https://help.aliyun.com/en/model-studio/error-code (400-InvalidParameter).
STREAM_ONLY_MESSAGE = "parameter.enable_thinking must be set to false for non-streaming calls"
BUDGET_MESSAGE = "The thinking_budget parameter must be a positive integer and not greater than {max_budget}"


def thinks(flavor: Flavor, model: str, body: Mapping[str, Any], *, stream: bool) -> bool | SimError:
    """An explicit `enable_thinking` decides, else the model's default; a flavor that cannot think never does."""
    if not flavor.thinking:
        return False
    rules = flavor.thinking_models.get(model)
    asked = body.get("enable_thinking")
    on = asked if isinstance(asked, bool) else rules is not None and rules.default_on
    if rules is None:
        return on
    if on and rules.stream_only and not stream:
        return SimError(400, STREAM_ONLY_MESSAGE, "invalid_request_error", "invalid_parameter_error")
    budget = body.get("thinking_budget")
    if budget is not None and (
        not isinstance(budget, int) or isinstance(budget, bool) or not 0 < budget <= rules.max_budget
    ):
        message = BUDGET_MESSAGE.format(max_budget=rules.max_budget)
        return SimError(400, message, "invalid_request_error", "invalid_parameter_error")
    return on
