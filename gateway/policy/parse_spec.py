"""Reading a policy tree into its spec models: entry-by-entry validation and the YAML-path problems it reports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_core import ErrorDetails

from gateway.policy.schema import (
    POLICY_VERSION,
    UNION_TAG,
    AliasSpec,
    DeploymentSpec,
    FallbackSpec,
    PolicySpec,
    ProviderSpec,
    RuleSpec,
    SpecModel,
    StrList,
    TenantSpec,
)
from gateway.policy.table import hash_api_key

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy, at a YAML path; `file` is set when a directory of files was merged."""

    loc: Loc
    message: str
    file: str | None = None

    def render(self) -> str:
        where = format_loc(self.loc)
        text = f"{where}: {self.message}" if where else self.message
        return f"{self.file}: {text}" if self.file else text


def format_loc(loc: Loc) -> str:
    """`("aliases", "coder", "targets", 1)` -> `aliases.coder.targets[1]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


SECTIONS: tuple[str, ...] = tuple(PolicySpec.model_fields)

_FRIENDLY = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "string_type": "expected a string",
}


def error_message(error: ErrorDetails) -> str:
    """pydantic's message for one error, reworded for someone editing YAML.

    The value written is repeated only for a choice among names (`enum`, `literal_error`): other values may be
    secrets (keys, headers) and never appear in an error.
    """
    friendly = _FRIENDLY.get(error["type"])
    if friendly is not None:
        return friendly
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    written = error.get("input")
    if error["type"] in ("enum", "literal_error") and isinstance(written, str | int | float) and len(str(written)) < 64:
        message += f", not {written!r}"
    return message


def version_problem(value: object) -> str | None:
    """Why `version: value` cannot be read, or None when it is the version this gateway speaks."""
    if value is None:
        return "required"
    if isinstance(value, bool) or value != POLICY_VERSION:
        return f"unsupported policy version {value!r} (this gateway reads version {POLICY_VERSION})"
    return None


Model = TypeVar("Model", bound=SpecModel)


def validate_entry(model: type[Model], raw: object, loc: Loc, problems: list[Problem]) -> Model | None:
    """Validate one entry, recording each error at its full YAML path.

    An invalid entry is still returned, without its bad keys, when what is left is valid: the cross-entry checks
    then see its references too (`deployments.x.provider` is checked even if `deployments.x.price` is wrong).
    Such an entry always comes with a problem, so it is never compiled.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
    problems.extend(Problem(loc + _yaml_path(err["loc"]), error_message(err)) for err in errors)
    bad = {err["loc"][0] for err in errors if err["loc"]}
    if not isinstance(raw, Mapping) or not bad:
        return None
    try:
        return model.model_validate({key: value for key, value in raw.items() if key not in bad})
    except ValidationError:
        return None


def _yaml_path(loc: tuple[str | int, ...]) -> Loc:
    return tuple(part for part in loc if not (isinstance(part, str) and part.startswith(UNION_TAG)))


def _section(
    tree: Mapping[str, object], name: str, model: type[Model], problems: list[Problem]
) -> dict[str, Model]:
    raw = tree.get(name)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(Problem((name,), "expected a mapping of names to entries"))
        return {}
    valid: dict[str, Model] = {}
    for key, entry in raw.items():
        spec = validate_entry(model, {} if entry is None else entry, (name, str(key)), problems)
        if spec is not None:
            valid[str(key)] = spec
    return valid


@dataclass(frozen=True)
class ParsedPolicy:
    """The valid part of a policy and every problem found so far, with what the cross-entry checks need."""

    spec: PolicySpec  # compile it only when there are no problems: it may hold entries stripped of bad keys
    problems: tuple[Problem, ...]
    rule_index: tuple[int, ...]  # the position in the file of each of spec.rules (unreadable rules are left out)
    names: Mapping[str, tuple[str, ...]]  # every name written in each named section, in file order, valid or not


def parse_policy(tree: object) -> ParsedPolicy:
    """Validate every entry of a parsed (and env-expanded) policy tree, one entry at a time.

    One bad entry does not hide another's problems, and cross-entry checks (gateway.policy.checks) later
    compare references against every name written, so one typo is reported once.
    """
    if not isinstance(tree, Mapping):
        message = "a policy must be a YAML mapping with `version: 1` at the top"
        return ParsedPolicy(PolicySpec(), (Problem((), message),), (), {})
    problems = [Problem((str(key),), "unknown key") for key in tree if key not in SECTIONS]
    version = version_problem(tree.get("version"))
    if version is not None:
        problems.append(Problem(("version",), version))
    rules: dict[int, RuleSpec] = {}
    raw_rules = tree.get("rules")
    if isinstance(raw_rules, list):
        for index, raw in enumerate(raw_rules):
            rule = validate_entry(RuleSpec, raw, ("rules", index), problems)
            if rule is not None:
                rules[index] = rule
    elif raw_rules is not None:
        problems.append(Problem(("rules",), "expected a list of rules"))
    raw_fallback = tree.get("fallback")
    fallback = validate_entry(FallbackSpec, {} if raw_fallback is None else raw_fallback, ("fallback",), problems)
    spec = PolicySpec(
        providers=_section(tree, "providers", ProviderSpec, problems),
        deployments=_section(tree, "deployments", DeploymentSpec, problems),
        aliases=_section(tree, "aliases", AliasSpec, problems),
        rules=list(rules.values()),
        fallback=fallback or FallbackSpec(),
        tenants=_section(tree, "tenants", TenantSpec, problems),
        sensitive_data_classes=_sensitive(tree.get("sensitive_data_classes"), problems),
    )
    names = {section: _names(tree.get(section)) for section in NAMED_SECTIONS}
    return ParsedPolicy(spec, tuple(problems), tuple(rules), names)


NAMED_SECTIONS = ("providers", "deployments", "aliases", "tenants")


class _SensitiveSpec(SpecModel):
    sensitive_data_classes: StrList = Field(default_factory=list)


def _sensitive(raw: object, problems: list[Problem]) -> list[str]:
    """`sensitive_data_classes`: the data classes whose request text polyroute never records (files, traces)."""
    given = validate_entry(_SensitiveSpec, {} if raw is None else {"sensitive_data_classes": raw}, (), problems)
    return given.sensitive_data_classes if given is not None else []


def _names(section: object) -> tuple[str, ...]:
    return tuple(str(key) for key in section) if isinstance(section, Mapping) else ()


_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def key_hash(entry: str) -> str:
    """The stored form of one `api_keys` entry: plaintext is hashed, `sha256:<hex>` is taken as is."""
    if entry.startswith("sha256:"):
        digest = entry.removeprefix("sha256:")
        if not _SHA256.match(digest):
            raise ValueError("'sha256:' must be followed by 64 hex digits")
        return digest.lower()
    if not entry:
        raise ValueError("empty key (did an environment variable expand to nothing?)")
    return hash_api_key(entry)
