"""What every image provider shares: which options each kind of target can honour, the usage an Images answer
reports, and an edit's multipart body for a relay."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.errors import BadRequestError
from gateway.policy.plan import Exclusion, RoutePlan
from gateway.policy.table import Deployment
from gateway.providers.base import Endpoint, Usage
from gateway.providers.dashscope_images import size_problem

IMAGE_ENDPOINTS = frozenset({Endpoint.IMAGE, Endpoint.IMAGE_EDIT})
# The OpenAI options Model Studio's image API has no counterpart for (its own extras pass through); a `quality` of
# `auto` or `standard` asks for nothing and is accepted.
DASHSCOPE_UNSUPPORTED = ("style", "background", "output_format", "output_compression", "moderation",
                         "partial_images", "input_fidelity", "mask")
_NEUTRAL_QUALITY = frozenset({"auto", "standard"})
DASHSCOPE_MAX_EDIT_IMAGES = 3  # qwen-image-edit takes 1 to 3 input images


def image_variant(body: Mapping[str, Any]) -> str:
    """`<size>/<quality>` as asked (either may be empty): what a `per_image` price reads."""
    return f"{body.get('size') or ''}/{body.get('quality') or ''}".lower()


def image_usage(data: Any, body: Mapping[str, Any]) -> Usage:
    """The images an OpenAI-shaped ImagesResponse returned (and its token usage, when the server reports one)."""
    images = data.get("data") if isinstance(data, dict) else None
    count = len(images) if isinstance(images, list) else 0
    usage = data.get("usage") if isinstance(data, dict) else None
    tokens = Usage.from_responses(usage) if isinstance(usage, dict) else None  # gpt-image: input/output tokens
    return Usage(
        input_tokens=tokens.input_tokens if tokens else 0, output_tokens=tokens.output_tokens if tokens else 0,
        images=count, image_variant=image_variant(body),
    )


def unsupported_option(deployment: Deployment, endpoint: Endpoint, body: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first option of this request the deployment cannot honour and why (`param`, `reason`); None when it can.

    An OpenAI-compatible server is relayed everything (it answers for itself); Model Studio's image API lacks some
    of OpenAI's options and serves each model at its own sizes; litellm relays no edits.
    """
    kind = deployment.provider.type
    if kind == "dashscope":
        for name in DASHSCOPE_UNSUPPORTED:
            if body.get(name) is not None:
                return name, f"does not support '{name}'"
        quality = body.get("quality")
        if quality is not None and quality not in _NEUTRAL_QUALITY:
            return "quality", "does not support 'quality'"
        problem = size_problem(deployment.model, body.get("size"))
        if problem is not None:
            return "size", problem
        images = body.get("image")
        if endpoint is Endpoint.IMAGE_EDIT and isinstance(images, list) and len(images) > DASHSCOPE_MAX_EDIT_IMAGES:
            return "image", f"takes at most {DASHSCOPE_MAX_EDIT_IMAGES} images to edit"
        return None
    if kind == "litellm" and endpoint is Endpoint.IMAGE_EDIT:
        return "image", "does not support 'image' (litellm relays no image edits)"
    return None


def capable_plan(plan: RoutePlan, endpoint: Endpoint, body: Mapping[str, Any]) -> RoutePlan:
    """The plan without the targets that cannot honour an option of this image request (each excluded with the
    option named, as route explain shows it); a 400 naming the option when no target can."""
    refused = [(d, found) for d in plan.attempts if (found := unsupported_option(d, endpoint, body)) is not None]
    if not refused:
        return plan
    if len(refused) == len(plan.attempts):
        detail = "; ".join(f"{d.name} ({d.provider.type}): {reason}" for d, (_, reason) in refused)
        raise BadRequestError(
            f"No target of model '{plan.alias}' can serve this request: {detail}.",
            param=refused[0][1][0], code="unsupported_option",
        )
    left = tuple(d for d in plan.attempts if all(d is not r for r, _ in refused))
    excluded = plan.excluded + tuple(
        Exclusion(d.name, f"option '{param}' (unsupported: {reason})") for d, (param, reason) in refused
    )
    return replace(plan, attempts=left, excluded=excluded)
