"""Every Lua script's keys hash to one Cluster slot, whatever the names; usage fields round-trip any name."""

from __future__ import annotations

from redis.crc import key_slot

from gateway.state.base import DeploymentQuota
from gateway.state.redis_keys import circuit_keys, deployment_keys, parse_usage_field, tenant_keys, usage_field

NOW = 1_750_000_000.0
NAMES = ["team-a", "team b", "{odd}", "a}b{c", "ünïcode", ""]


def slots(keys: list[str]) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


def test_a_tenants_keys_share_a_slot() -> None:
    for name in NAMES:
        assert len(slots(tenant_keys(name, NOW))) == 1
        assert len(slots(tenant_keys(name, NOW + 40 * 86_400))) == 1


def test_the_deployments_of_any_plan_share_a_slot() -> None:
    plan = [DeploymentQuota(name or "x", rpm=1) for name in NAMES]
    assert len(slots(deployment_keys(plan))) == 1


def test_a_circuits_keys_share_a_slot() -> None:
    for name in NAMES:
        assert len(slots(circuit_keys(name))) == 1


def test_usage_fields_round_trip_any_name() -> None:
    key = ("a|b", 'q"uote', "x,y", "[", "ü", "", "sg")
    assert parse_usage_field(usage_field(key, "requests")) == (key, "requests")
    assert parse_usage_field("not json") is None
    assert parse_usage_field('["too", "short"]') is None
