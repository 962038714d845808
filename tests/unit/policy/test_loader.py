"""Loading policies: references, ${VAR} expansion, hashed keys, YAML errors, directories, and the printed table."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.policy.loader import describe_policy, load_policy, load_policy_text
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import Hosting, PolicyTable, Strategy

FX = CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08)
POLICIES = Path(__file__).resolve().parents[3] / "policies"

BASE = """
version: 1
providers:
  qwen-cloud:
    type: openai
    base_url: https://dashscope-intl.aliyuncs.com/compatible-mode/v1
    api_key: ${DASHSCOPE_API_KEY}
    hosting: cloud
    jurisdiction: SG
    vendor: alibaba
  gpu-pool: {type: openai, base_url: "http://127.0.0.1:8000/v1/", hosting: self_hosted, jurisdiction: onprem,
             vendor: self}
deployments:
  qwen-plus: {provider: qwen-cloud, model: qwen3.6-plus, context_window: 1000000,
              price: {input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}, rpm: 600}
  qwen-local: {provider: gpu-pool, model: Qwen/Qwen3-32B, context_window: 32768,
               price: {gpu_hour: 2.5, tokens_per_second: 1200}, capabilities: [tools]}
aliases:
  coder: {targets: [qwen-plus, qwen-local], strategy: priority}
  default: {targets: [qwen-local, qwen-plus], strategy: weighted, weights: [3, 1]}
"""
ENV = {"DASHSCOPE_API_KEY": "sk-dashscope-secret"}


def load(text: str, env: dict[str, str] | None = None) -> PolicyTable:
    return load_policy_text(text, ENV if env is None else env, fx=FX)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(text, env)
    return caught.value.problems


def test_the_design_example_compiles() -> None:
    table = load(BASE)
    cloud = table.providers["qwen-cloud"]
    assert cloud.api_key == "sk-dashscope-secret"
    assert cloud.jurisdiction == "sg"  # `SG` and `sg` are one place for jurisdiction rules
    assert table.providers["gpu-pool"].base_url == "http://127.0.0.1:8000/v1"
    assert table.providers["gpu-pool"].hosting is Hosting.SELF_HOSTED
    assert table.deployments["qwen-plus"].provider is cloud
    assert table.deployments["qwen-plus"].rpm == 600
    assert table.deployments["qwen-local"].capabilities == frozenset({"tools"})
    assert table.aliases["default"].strategy is Strategy.WEIGHTED
    assert table.aliases["default"].weights == (3.0, 1.0)


def test_an_alias_may_be_marked_critical_for_vendor_drills() -> None:
    table = load(BASE.replace("strategy: priority}", "strategy: priority, critical: true}"))
    assert table.aliases["coder"].critical is True
    assert table.aliases["default"].critical is False
    [problem] = problems(BASE.replace("strategy: priority}", "strategy: priority, critical: [coder]}"))
    assert problem.startswith("aliases.coder.critical: ")


# --- references and consistency ----------------------------------------------------------------------------------


def test_alias_target_typo() -> None:
    text = BASE.replace("targets: [qwen-plus, qwen-local], strategy: priority", "targets: [qwen-plus, qwen-lcoal]")
    assert problems(text) == ["aliases.coder.targets[1]: unknown deployment 'qwen-lcoal'"]


def test_deployment_provider_must_exist() -> None:
    text = BASE.replace("provider: gpu-pool", "provider: gpu-pol")
    assert problems(text) == ["deployments.qwen-local.provider: unknown provider 'gpu-pol'"]


def test_rule_references() -> None:
    text = BASE + """
rules:
  - {name: a, when: {alias: codr}, route: coders}
  - {name: b, require: {deployments: [qwen-local, qwen-remote]}}
  - {name: a, require: {hosting: cloud}}
  - {name: c, when: {tags: batch}}
"""
    assert problems(text) == [
        "rules[0].route: unknown alias 'coders'",
        "rules[0].when.alias[0]: unknown alias 'codr'",
        "rules[1].require.deployments[1]: unknown deployment 'qwen-remote'",
        "rules[2].name: duplicate rule name 'a'",
        "rules[3]: a rule needs `require`, `route` or both",
    ]


def test_tenant_models_must_be_aliases() -> None:
    text = BASE + "tenants:\n  team-a: {api_keys: [k], models: [coder, chat]}\n"
    assert problems(text) == ["tenants.team-a.models[1]: unknown alias 'chat'"]


def test_weights() -> None:
    text = BASE.replace("weights: [3, 1]", "weights: [3]")
    assert problems(text) == ["aliases.default.weights: 1 weights for 2 targets"]
    text = BASE.replace(", weights: [3, 1]", "")
    assert problems(text) == ["aliases.default.weights: required when strategy is weighted (one per target)"]
    text = BASE.replace("weights: [3, 1]", "weights: [3, -1]")
    assert problems(text) == ["aliases.default.weights[1]: input should be greater than 0"]
    text = BASE.replace("strategy: priority", "strategy: priority, weights: [1, 1]")
    assert problems(text) == ["aliases.coder.weights: only used with strategy weighted"]


def test_alias_needs_targets() -> None:
    text = BASE.replace("targets: [qwen-plus, qwen-local], strategy: priority", "targets: []")
    assert problems(text) == ["aliases.coder.targets: an alias needs at least one target"]


def test_provider_type_specific_fields() -> None:
    more = """
  claude: {type: litellm, hosting: cloud, jurisdiction: us, vendor: anthropic}
  ftp: {type: openai, base_url: "ftp://files.example.com", hosting: cloud, jurisdiction: us, vendor: x}
  nourl: {type: openai, hosting: cloud, jurisdiction: us, vendor: x}
deployments:"""
    found = problems(BASE.replace("\ndeployments:", more))
    assert found == [
        "providers.claude.litellm_prefix: required for a litellm provider (e.g. anthropic)",
        "providers.ftp.base_url: must be an http:// or https:// URL",
        "providers.nourl.base_url: required for an openai provider",
    ]


def test_yaml_syntax_errors_name_line_and_column() -> None:
    assert problems("version: 1\nproviders:\n  p: {hosting: cloud\n") == [
        "YAML syntax error: line 4, column 1: expected ',' or '}', but got '<stream end>' "
        "(while parsing a flow mapping)"
    ]
    assert problems("version: 1\naliases:\n  a: {targets: [x]}\n  a: {targets: [y]}\n") == [
        "YAML syntax error: line 4, column 3: duplicate key 'a'"
    ]


def test_not_a_policy() -> None:
    assert problems("") == ["the policy is empty; it needs at least `version: 1`"]
    assert problems("- a list\n") == ["a policy must be a YAML mapping with `version: 1` at the top"]


# --- ${VAR} expansion ----------------------------------------------------------------------------------------------


def test_missing_variable_names_path_and_variable() -> None:
    assert problems(BASE, env={}) == [
        "providers.qwen-cloud.api_key: environment variable DASHSCOPE_API_KEY is not set"
    ]


def test_variables_expand_anywhere_in_a_value_with_defaults() -> None:
    text = BASE.replace('"http://127.0.0.1:8000/v1/"', '"http://${VLLM_HOST:-127.0.0.1}:${VLLM_PORT}/v1"')
    text = text.replace("rpm: 600", 'rpm: "${QWEN_RPM:-600}"')  # quoted: `{` is syntax in a {flow} map
    table = load(text, env={**ENV, "VLLM_PORT": "9000"})
    assert table.providers["gpu-pool"].base_url == "http://127.0.0.1:9000/v1"
    assert table.deployments["qwen-plus"].rpm == 600
    table = load(text, env={**ENV, "VLLM_PORT": "9000", "VLLM_HOST": "gpu.internal", "QWEN_RPM": "1200"})
    assert table.providers["gpu-pool"].base_url == "http://gpu.internal:9000/v1"
    assert table.deployments["qwen-plus"].rpm == 1200


def test_empty_default_and_literal_dollar() -> None:
    text = BASE.replace("${DASHSCOPE_API_KEY}", "${DASHSCOPE_API_KEY:-}").replace("vendor: self", 'vendor: "$${self}"')
    table = load(text, env={})
    assert table.providers["qwen-cloud"].api_key is None
    assert table.providers["gpu-pool"].vendor == "${self}"


def test_bad_variable_references() -> None:
    text = BASE.replace("${DASHSCOPE_API_KEY}", "${DASHSCOPE_API_KEY")
    assert problems(text) == ["providers.qwen-cloud.api_key: unclosed '${' (write ${NAME}, or $${ for a literal '${')"]
    text = BASE.replace("${DASHSCOPE_API_KEY}", "${1KEY}")
    assert problems(text) == [
        "providers.qwen-cloud.api_key: bad reference '${1KEY}': use ${NAME} or ${NAME:-default}"
    ]


def test_missing_variable_inside_a_list() -> None:
    text = BASE + 'tenants:\n  team-a: {api_keys: ["${TEAM_A_KEY}"]}\n'
    assert problems(text) == ["tenants.team-a.api_keys[0]: environment variable TEAM_A_KEY is not set"]


# --- tenant keys -------------------------------------------------------------------------------------------------


def test_keys_are_kept_only_as_sha256() -> None:
    digest = hashlib.sha256(b"ci-key").hexdigest()
    text = BASE + f"""
tenants:
  team-a: {{api_keys: ["${{TEAM_A_KEY}}", "sha256:{digest.upper()}"], models: [coder]}}
  public: {{anonymous: true}}
"""
    table = load(text, env={**ENV, "TEAM_A_KEY": "sk-team-a-plaintext"})
    team_a = table.tenants["team-a"]
    assert team_a.key_hashes == {hashlib.sha256(b"sk-team-a-plaintext").hexdigest(), digest}
    assert table.tenant_for_key_hash(digest) is team_a
    assert table.tenant_for_key_hash(hashlib.sha256(b"sk-team-a-plaintext").hexdigest()) is team_a
    assert table.tenant_for_key_hash(hashlib.sha256(b"wrong").hexdigest()) is None
    assert table.anonymous_tenant() is table.tenants["public"]
    assert "sk-team-a-plaintext" not in repr(table)
    assert "sk-team-a-plaintext" not in describe_policy(table)


def test_bad_keys() -> None:
    text = BASE + """
tenants:
  team-a: {api_keys: ["sha256:abc", "${EMPTY}", shared]}
  team-b: {api_keys: [shared]}
  team-c: {models: [coder]}
  open-1: {anonymous: true}
  open-2: {anonymous: true}
"""
    assert problems(text, env={**ENV, "EMPTY": ""}) == [
        "tenants.team-a.api_keys[0]: 'sha256:' must be followed by 64 hex digits",
        "tenants.team-a.api_keys[1]: empty key (did an environment variable expand to nothing?)",
        "tenants.team-b.api_keys[0]: the same key is already given to tenant 'team-a'",
        "tenants.team-c.api_keys: a tenant needs at least one key, or `anonymous: true`",
        "tenants.open-2.anonymous: only one tenant may be anonymous; 'open-1' already is",
    ]


# --- files and directories -------------------------------------------------------------------------------------


def test_load_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE, encoding="utf-8")
    table = load_policy(path, ENV, fx=FX)
    assert table.source == str(path)
    assert set(table.aliases) == {"coder", "default"}
    with pytest.raises(PolicyError) as caught:
        load_policy(path, {}, fx=FX)
    assert str(caught.value) == (
        f"{path}: providers.qwen-cloud.api_key: environment variable DASHSCOPE_API_KEY is not set"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "nope.yaml", {}, fx=FX)
    assert caught.value.problems == [f"cannot read {tmp_path / 'nope.yaml'}: No such file or directory"]


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_a_directory_is_merged_in_name_order(tmp_path: Path) -> None:
    providers, rest = BASE.split("deployments:")
    _write(tmp_path, {
        "20-routing.yml": "version: 1\ndeployments:" + rest + "rules:\n  - {name: second, route: coder}\n",
        "10-providers.yaml": providers + "rules:\n  - {name: first, require: {hosting: cloud}}\n",
        "notes.txt": "not: [yaml",
    })
    table = load_policy(tmp_path, ENV, fx=FX)
    assert [rule.name for rule in table.rules] == ["first", "second"]
    assert set(table.deployments) == {"qwen-plus", "qwen-local"}


def test_directory_errors_name_the_file(tmp_path: Path) -> None:
    providers, rest = BASE.split("deployments:")
    typo = rest.replace("qwen-local]", "qwen-lcoal]")
    gpu_again = "  gpu-pool: {base_url: 'http://h/v1', hosting: cloud, jurisdiction: x, vendor: y}\n"
    _write(tmp_path, {
        "a.yaml": providers + "rules:\n  - {name: r, route: coder}\n",
        "b.yaml": "version: 1\ndeployments:" + typo + "rules: [{name: r, route: x}]\n",
        "c.yaml": "version: 1\nproviders:\n" + gpu_again,
    })
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, ENV, fx=FX)
    assert caught.value.source == str(tmp_path)
    assert caught.value.problems == [
        "c.yaml: providers.gpu-pool: already defined in a.yaml",
        "b.yaml: aliases.coder.targets[1]: unknown deployment 'qwen-lcoal'",
        "b.yaml: rules[0].name: duplicate rule name 'r'",
        "b.yaml: rules[0].route: unknown alias 'x'",
    ]


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, {}, fx=FX)
    assert caught.value.problems == ["no *.yaml or *.yml files in this directory"]


# --- the printed table -----------------------------------------------------------------------------------------------


def test_describe_shows_the_resolved_table_without_secrets() -> None:
    text = BASE.replace("http://127.0.0.1:8000", "http://user:pw@127.0.0.1:8000") + """
rules:
  - name: pii-stays-home
    when: {data_class: [pii, confidential]}
    require: {hosting: self_hosted}
tenants:
  team-a: {api_keys: [sk-tenant-secret, other-key], models: [coder], limits: {rpm: 120}, budget: {usd_per_day: 50}}
"""
    out = describe_policy(load(text))
    assert "sk-dashscope-secret" not in out and "sk-tenant-secret" not in out and "pw@" not in out
    assert "qwen-cloud: openai (openai-compatible), cloud, jurisdiction sg, vendor alibaba, " in out
    assert "https://dashscope-intl.aliyuncs.com/compatible-mode/v1, api key set" in out
    assert "qwen-plus: qwen-cloud / qwen3.6-plus, context 1,000,000, $0.112 in / $0.672 out per 1M tokens " in out
    assert "(USD, from policy), 600 rpm" in out
    assert "$0.5787 in / $0.5787 out per 1M tokens (USD, from gpu_hour)" in out
    assert "default: weighted -> qwen-local x3, qwen-plus x1" in out
    assert "1. pii-stays-home: when data_class in [confidential, pii] -> require hosting self_hosted" in out
    assert "team-a: 2 keys, models coder, 120 rpm, $50/day" in out


def test_describe_open_access() -> None:
    assert "none declared: every caller is served as one anonymous tenant" in describe_policy(load(BASE))


# --- the example policies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo.yaml", "qwen-cloud-with-local-fallback.yaml", "sovereignty.yaml"])
def test_example_policies_load_with_an_empty_environment(name: str) -> None:
    table = load_policy(POLICIES / name, {}, fx=FX)
    assert table.aliases and table.deployments
    assert describe_policy(table).startswith(f"policy: {POLICIES / name}")


def test_demo_policy_uses_the_demo_ports() -> None:
    env = {"POLYROUTE_DEMO_CLOUD_PORT": "20001", "POLYROUTE_DEMO_LOCAL_PORT": "20002"}
    table = load_policy(POLICIES / "demo.yaml", env, fx=FX)
    assert table.providers["sim-cloud"].base_url == "http://127.0.0.1:20001/compatible-mode/v1"
    assert table.providers["sim-vllm"].base_url == "http://127.0.0.1:20002/v1"
    assert table.aliases["coder"].targets == ("qwen-plus", "qwen-local")
    pii = next(rule for rule in table.rules if rule.name == "pii-stays-home")
    assert pii.require is not None and pii.require.hosting is Hosting.SELF_HOSTED


def test_sovereignty_policy_keeps_team_b_out_of_cn() -> None:
    table = load_policy(POLICIES / "sovereignty.yaml", {"TEAM_B_KEY": "sk-b"}, fx=FX)
    rule = next(rule for rule in table.rules if rule.name == "team-b-no-cn")
    assert rule.when.tenant == frozenset({"team-b"})
    assert rule.require is not None and rule.require.jurisdiction_not == frozenset({"cn"})
    assert table.tenant_for_key_hash(hashlib.sha256(b"sk-b").hexdigest()) is table.tenants["team-b"]


def test_sensitive_data_classes_are_a_top_level_list() -> None:
    base = "version: 1\nproviders: {}\ndeployments: {}\naliases: {}\n"
    assert load(base).sensitive_data_classes == frozenset()
    assert load(base + "sensitive_data_classes: [pii, phi]\n").sensitive_data_classes == {"pii", "phi"}
    assert problems(base + "sensitive_data_classes: {pii: true}\n") == [
        "sensitive_data_classes: expected a list"
    ]
