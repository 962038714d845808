"""The `shadow:` block of an alias and `sensitive_data_classes`: validated once, errors naming the YAML path."""

from __future__ import annotations

import pytest

from gateway.errors import PolicyError
from gateway.policy.loader import load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable
from tests.unit.portability.conftest import POLICY

FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)
SHADOWED = POLICY.replace(
    "coder: {targets: [qwen-plus, qwen-local], critical: true}",
    "coder: {targets: [qwen-plus], critical: true,\n"
    "         shadow: {targets: [qwen-local, son], sample: 0.1, max_concurrency: 2, budget_usd_per_day: 1}}",
) + "sensitive_data_classes: [pii]\n"


def load(text: str) -> PolicyTable:
    return load_policy_text(text, {}, fx=FX)


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as err:
        load(text)
    return [str(p) for p in err.value.problems]


def test_a_shadow_block_compiles_to_the_alias() -> None:
    table = load(SHADOWED)
    shadow = table.aliases["coder"].shadow
    assert shadow is not None
    assert (shadow.targets, shadow.sample, shadow.max_concurrency, shadow.budget_usd_per_day, shadow.record) == (
        ("qwen-local", "son"), 0.1, 2, 1.0, None,
    )
    assert table.aliases["chat"].shadow is None
    assert table.sensitive_data_classes == frozenset({"pii"})


def test_shadowing_is_off_by_default_with_the_documented_defaults() -> None:
    table = load(POLICY.replace("solo: {targets: [qwen-plus]}", "solo: {targets: [qwen-plus], shadow: {targets: son}}"))
    shadow = table.aliases["solo"].shadow
    assert shadow is not None and (shadow.sample, shadow.max_concurrency, shadow.budget_usd_per_day) == (0.05, 4, 5.0)
    assert load(POLICY).aliases["coder"].shadow is None


def test_an_unknown_shadow_target_is_named_with_its_path() -> None:
    assert problems(SHADOWED.replace("[qwen-local, son]", "[qwen-local, sonn]")) == [
        "aliases.coder.shadow.targets[1]: unknown deployment 'sonn'"
    ]


@pytest.mark.parametrize(
    ("written", "field"),
    [("sample: 0.1", "sample: 1.5"), ("sample: 0.1", "sample: 0"), ("max_concurrency: 2", "max_concurrency: 0"),
     ("budget_usd_per_day: 1", "budget_usd_per_day: -1"), ("sample: 0.1", "sample: 0.1, smaple: 0.2")],
)
def test_bad_shadow_values_are_refused_at_their_path(written: str, field: str) -> None:
    [problem] = problems(SHADOWED.replace(written, field))
    assert problem.startswith("aliases.coder.shadow.")


def test_sensitive_data_classes_must_be_a_list_of_names() -> None:
    [problem] = problems(POLICY + "sensitive_data_classes: {pii: true}\n")
    assert problem.startswith("sensitive_data_classes")
    assert load(POLICY + "sensitive_data_classes: pii\n").sensitive_data_classes == frozenset({"pii"})
