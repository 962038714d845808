"""Image deployments in a policy: `kind`, a `per_image` price by size or quality, and aliases of one kind."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequestError, PolicyError
from gateway.observability.accounting import request_charge
from gateway.policy.describe import describe_policy
from gateway.policy.engine import decide
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import HealthSnapshot, RequestFacts
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable
from gateway.providers.base import Usage

FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)
POLICY = """
version: 1
providers:
  ms: {type: dashscope, base_url: "https://dashscope-intl.aliyuncs.com/api/v1", hosting: cloud, jurisdiction: sg,
       vendor: alibaba}
  gpu: {type: openai, base_url: "http://127.0.0.1:8000/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
deployments:
  flat:   {provider: ms, model: wan2.2-t2i-flash, kind: image, price: {per_image: 0.2, currency: CNY}}
  sized:  {provider: ms, model: qwen-image-plus, kind: image, image_api: sync,
           price: {per_image: {"1328x1328": 0.03, "1664x928/hd": 0.09, hd: 0.07, default: 0.05}}}
  dear:   {provider: gpu, model: sd, kind: image, price: {per_image: {"512x512": 0.01, "1024x1024": 0.04}}}
  talker: {provider: gpu, model: qwen, price: {input_per_mtok: 1, output_per_mtok: 2}}
aliases:
  paint: {targets: [flat, sized, dear]}
  chat:  {targets: [talker]}
rules:
  - {name: everyone-chats, when: {}, route: chat}
"""


@pytest.fixture(scope="module")
def table() -> PolicyTable:
    return load_policy_text(POLICY, {}, fx=FX)


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, {}, fx=FX)
    return caught.value.problems


def cost(table: PolicyTable, deployment: str, images: int, variant: str) -> float:
    return request_charge(table.deployments[deployment], Usage(images=images, image_variant=variant)).usd


def test_kinds_and_image_api_are_compiled(table: PolicyTable) -> None:
    assert table.deployments["sized"].kind == "image" and table.deployments["sized"].image_api == "sync"
    assert table.deployments["talker"].kind == "chat"
    assert table.aliases["paint"].kind == "image" and table.aliases["chat"].kind == "chat"


def test_a_flat_price_per_image_is_converted_to_usd(table: PolicyTable) -> None:
    assert cost(table, "flat", 3, "1024x1024/") == pytest.approx(3 * 0.2 * 0.14)


def test_a_price_by_size_and_quality_takes_the_closest_entry(table: PolicyTable) -> None:
    assert cost(table, "sized", 1, "1328x1328/") == pytest.approx(0.03)
    assert cost(table, "sized", 1, "1664x928/hd") == pytest.approx(0.09)
    assert cost(table, "sized", 2, "1328x1328/hd") == pytest.approx(2 * 0.03)  # the size's own entry first
    assert cost(table, "sized", 1, "1104x1472/hd") == pytest.approx(0.07)
    assert cost(table, "sized", 1, "/") == pytest.approx(0.05)


def test_a_book_without_the_size_or_a_default_bills_its_highest_price(table: PolicyTable) -> None:
    assert cost(table, "dear", 1, "768x768/") == pytest.approx(0.04)


def test_no_images_cost_nothing(table: PolicyTable) -> None:
    assert cost(table, "flat", 0, "") == 0.0


def test_images_ask_an_image_alias_and_chat_a_chat_alias(table: PolicyTable) -> None:
    plan = decide(RequestFacts(alias="paint", tenant="t", endpoint="image", images=2, image_variant="1328x1328/"),
                  table, HealthSnapshot())
    assert [d.name for d in plan.attempts] == ["flat", "sized", "dear"]  # the chat rule's route is not taken
    assert plan.estimated_cost_usd["sized"] == pytest.approx(0.06)
    with pytest.raises(BadRequestError) as caught:
        decide(RequestFacts(alias="paint", tenant="t", endpoint="chat"), table, HealthSnapshot())
    assert caught.value.param == "model" and "'paint' is an alias of kind image" in caught.value.message
    with pytest.raises(BadRequestError) as caught:
        decide(RequestFacts(alias="chat", tenant="t", endpoint="image_edit"), table, HealthSnapshot())
    assert "'chat' is an alias of kind chat: it cannot serve image requests" in caught.value.message


def test_an_alias_mixing_kinds_does_not_load() -> None:
    found = problems(POLICY.replace("paint: {targets: [flat, sized, dear]}", "paint: {targets: [flat, talker]}"))
    assert found == [
        "aliases.paint.targets[1]: deployment 'talker' is of kind chat, the alias's first target of kind image: "
        "an alias serves one kind of request"
    ]


def test_a_dashscope_provider_serves_images_only() -> None:
    found = problems(POLICY.replace("model: wan2.2-t2i-flash, kind: image,", "model: wan2.2-t2i-flash,"))
    assert "deployments.flat.kind: provider 'ms' is a dashscope provider: it serves `kind: image` only" in found


def test_image_api_is_for_image_deployments_and_per_image_needs_a_price() -> None:
    found = problems(POLICY.replace("model: qwen, price: {input_per_mtok: 1, output_per_mtok: 2}",
                                    "model: qwen, image_api: async, price: {per_image: {}}"))
    assert "deployments.talker.image_api: only used by `kind: image` deployments" in found
    assert "deployments.talker.price.per_image: give at least one price" in found


def test_shadow_targets_share_the_aliases_kind() -> None:
    shadowed = "chat:  {targets: [talker], shadow: {targets: [flat]}}"
    found = problems(POLICY.replace("chat:  {targets: [talker]}", shadowed))
    assert found == ["aliases.chat.shadow.targets[0]: deployment 'flat' is of kind image, not chat"]


def test_policy_check_shows_kinds_and_image_prices(table: PolicyTable) -> None:
    text = describe_policy(table)
    assert "ms: dashscope (Model Studio native image API)" in text
    assert "sized: ms / qwen-image-plus, context unknown, per image: 1328x1328 $0.03, 1664x928/hd $0.09" in text
    assert "kind image (sync API)" in text and "  paint (image): priority -> flat, sized, dear" in text
