"""Real processes on loopback for the integration tests, started once per package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import start_gateway, start_simulated
from tests.support.resilience import Resilience, resilience_stack
from tests.support.stack import POLICY, Stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key="sk-sim-cloud-secret")
    vllm = start_simulated("vllm", name="sim-vllm")
    ollama = start_simulated("ollama", name="sim-ollama")
    policy: Path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(POLICY.format(cloud=cloud.base_url, vllm=vllm.base_url, ollama=ollama.base_url))
    gateway = start_gateway(policy, env={"SIM_CLOUD_KEY": "sk-sim-cloud-secret", "POLYROUTE_ADMIN_KEY": "adm"})
    made = Stack(gateway, cloud, vllm, ollama)
    try:
        yield made
    finally:
        made.close_clients()
        gateway.stop()
        for upstream in (cloud, vllm, ollama):
            upstream.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        s: Stack = request.getfixturevalue("stack")
        for upstream in (s.cloud, s.vllm, s.ollama):
            upstream.clear()


@pytest.fixture(scope="package")
def rs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resilience]:
    """The fault-injection stack of the test_resilience_* modules (see tests/support/resilience.py)."""
    with resilience_stack(tmp_path_factory.mktemp("resilience")) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _no_resilience_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "rs" in request.fixturenames:
        r: Resilience = request.getfixturevalue("rs")
        r.cloud.clear()
        r.local.clear()
