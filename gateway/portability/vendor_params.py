"""The provider-specific request parameters, read from vendor_params.yaml (data, so that adding one is no code)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml


@cache  # a file shipped with the package: read once per process
def vendor_params() -> dict[str, str]:
    """Parameter name -> the vendor that alone understands it."""
    text = resources.files("gateway.portability").joinpath("vendor_params.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return {str(param): str(vendor) for vendor, params in data.items() for param in params}
