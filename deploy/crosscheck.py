"""Cross-file checks of deploy/ that no schema can make: names, selectors, secrets and shutdown timings agree.

Also: the Dockerfile's COPY sources exist and are in the build context, the image's lock matches the
development lock and pyproject.toml, and the Kubernetes ConfigMap carries deploy/policy/policy.yaml unchanged.

Usage: python deploy/crosscheck.py COMPOSE_CONFIG.json
(COMPOSE_CONFIG.json is `docker-compose -f deploy/compose.yaml --profile selfhosted config --format json`.)
Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"
POLICY = DEPLOY / "policy" / "policy.yaml"
NGINX = DEPLOY / "nginx" / "nginx.conf"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
# deploy/k8s files deliberately left out of kustomization.yaml (each says why in its header).
NOT_IN_KUSTOMIZATION = {"kustomization.yaml", "secret.example.yaml", "servicemonitor.yaml"}
PREFIX = "crosscheck:"

Doc = dict[str, Any]


def load_k8s() -> dict[tuple[str, str], Doc]:
    docs: dict[tuple[str, str], Doc] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and "metadata" in doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def one(docs: Mapping[tuple[str, str], Doc], kind: str) -> Doc:
    found = [doc for (k, _), doc in docs.items() if k == kind]
    if len(found) != 1:
        raise SystemExit(f"{PREFIX} expected exactly one {kind} in deploy/k8s, found {len(found)}")
    return found[0]


def env_of(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


def policy_variables() -> set[str]:
    """Variables the policy needs from the environment (`${VAR}` without a `:-default`), outside comments."""
    text = "\n".join(line.split("#", 1)[0] for line in POLICY.read_text().splitlines())
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


def subset(small: Mapping[str, str], big: Mapping[str, str]) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    if not match or not duration:
        raise SystemExit(f"{PREFIX} cannot read duration {duration!r}")
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def check_k8s(docs: Mapping[tuple[str, str], Doc]) -> Iterator[str]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    for name in sorted(listed):
        if not (K8S / name).is_file():
            yield f"kustomization.yaml: resource {name} does not exist"
    for path in sorted(K8S.glob("*.yaml")):
        if path.name not in listed | NOT_IN_KUSTOMIZATION:
            yield f"kustomization.yaml: {path.name} is neither listed in resources nor a documented exclusion"

    deployment = docs[("Deployment", "polyroute")]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "gateway")
    env = env_of(container)

    if not subset(deployment["spec"]["selector"]["matchLabels"], pod_labels):
        yield "deployment.yaml: spec.selector does not match the pod template's labels"
    image_names = {image["name"] for image in kustomization.get("images", [])}
    if container["image"].split(":")[0] not in image_names:
        yield f"kustomization.yaml: images[] does not rename the gateway image {container['image']!r}"

    service = docs[("Service", "polyroute")]
    if not subset(service["spec"]["selector"], pod_labels):
        yield "service.yaml: selector does not select the gateway pods"
    port_names = {p["name"] for p in container["ports"]}
    if not all(p["targetPort"] in port_names for p in service["spec"]["ports"]):
        yield "service.yaml: targetPort is not a named port of the gateway container"
    if int(env["POLYROUTE_PORT"]["value"]) != container["ports"][0]["containerPort"]:
        yield "deployment.yaml: POLYROUTE_PORT differs from the container port"

    pdb = one(docs, "PodDisruptionBudget")
    if not subset(pdb["spec"]["selector"]["matchLabels"], pod_labels):
        yield "pdb.yaml: selector does not select the gateway pods"
    hpa = one(docs, "HorizontalPodAutoscaler")
    if hpa["spec"]["scaleTargetRef"] != {"apiVersion": "apps/v1", "kind": "Deployment", "name": "polyroute"}:
        yield "hpa.yaml: scaleTargetRef does not name the gateway Deployment"
    monitor = one(docs, "ServiceMonitor")
    if not subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]):
        yield "servicemonitor.yaml: selector does not select the gateway Service"
    if not all(e.get("port") in {p["name"] for p in service["spec"]["ports"]} for e in monitor["spec"]["endpoints"]):
        yield "servicemonitor.yaml: endpoint port is not a named port of the gateway Service"

    configmaps = {v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v}
    for name in configmaps:
        if ("ConfigMap", name) not in docs:
            yield f"deployment.yaml: mounts ConfigMap {name} that deploy/k8s does not define"
    configmap = docs[("ConfigMap", "polyroute-policy")]
    if configmap["data"]["policy.yaml"] != POLICY.read_text():
        yield "configmap.yaml: data.policy.yaml differs from deploy/policy/policy.yaml"
    policy_dir = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "policy")
    if env["POLYROUTE_POLICY"]["value"] != f"{policy_dir}/policy.yaml":
        yield "deployment.yaml: POLYROUTE_POLICY is not policy.yaml in the mounted ConfigMap directory"

    secret = one(docs, "Secret")
    for name in sorted(policy_variables()):
        if name not in env:
            yield f"deployment.yaml: the policy needs ${{{name}}} but the container does not set it"
    for name, item in sorted(env.items()):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref and (ref["name"] != secret["metadata"]["name"] or ref["key"] not in secret["stringData"]):
            yield f"deployment.yaml: {name} reads key {ref['key']} of Secret {ref['name']}, not in secret.example.yaml"

    redis_host = re.sub(r"^redis://([^:/]+).*", r"\1", env["POLYROUTE_REDIS_URL"]["value"])
    if ("Service", redis_host) not in docs:
        yield f"deployment.yaml: POLYROUTE_REDIS_URL names host {redis_host}, which is no Service in deploy/k8s"

    grace = float(env["POLYROUTE_SHUTDOWN_GRACE_SECONDS"]["value"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    sleep = float(pre_stop[1]) if pre_stop[0] == "sleep" else 0.0
    if sleep + grace >= pod["spec"]["terminationGracePeriodSeconds"]:
        yield "deployment.yaml: preStop sleep + POLYROUTE_SHUTDOWN_GRACE_SECONDS >= terminationGracePeriodSeconds"


def check_compose(config: Mapping[str, Any]) -> Iterator[str]:
    services: Mapping[str, Any] = config["services"]
    gateways = sorted(name for name in services if name.startswith("gateway-"))
    if len(gateways) < 2:
        yield "compose.yaml: expected at least two gateway replicas"
    for service_name, service in sorted(services.items()):
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and not Path(volume["source"]).exists():
                yield f"compose.yaml: {service_name} mounts {volume['source']}, which does not exist"
    for name in gateways:
        env = services[name]["environment"]
        for variable in sorted(policy_variables()):
            if variable not in env:
                yield f"compose.yaml: the policy needs ${{{variable}}} but {name} does not set it"
        redis_host = re.sub(r"^redis://([^:/]+).*", r"\1", env["POLYROUTE_REDIS_URL"])
        if redis_host not in services:
            yield f"compose.yaml: {name}'s POLYROUTE_REDIS_URL names host {redis_host}, which is no service"
        if float(env["POLYROUTE_SHUTDOWN_GRACE_SECONDS"]) >= seconds(services[name]["stop_grace_period"]):
            yield f"compose.yaml: {name}'s POLYROUTE_SHUTDOWN_GRACE_SECONDS must stay below its stop_grace_period"
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        target
        for job in prometheus.get("scrape_configs", [])
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    for name in gateways:
        if f"{name}:8080" not in targets:
            yield f"prometheus.yml: no scrape target {name}:8080 for the compose service {name}"
    upstreams = sorted(re.findall(r"^\s*server\s+([\w.-]+):8080\b", NGINX.read_text(), re.MULTILINE))
    if upstreams != gateways:
        yield f"nginx.conf: upstream servers {upstreams} differ from the compose gateway services {gateways}"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out (the last matching .dockerignore pattern decides)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
            ignored = not negated
    return ignored


def _pins(lock: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", lock.read_text(), re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def check_runtime_lock() -> Iterator[str]:
    """The image's lock pins what the development lock pins, and every runtime dependency of pyproject.toml."""
    runtime, full = _pins(ROOT / "requirements-runtime.lock"), _pins(ROOT / "requirements.lock")
    for name, version in sorted(runtime.items()):
        if full.get(name) != version:
            yield (
                f"requirements-runtime.lock: {name}=={version} but requirements.lock has {full.get(name)}; "
                "regenerate it with the command at its top"
            )
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    for requirement in re.findall(r'^\s*"([A-Za-z0-9._-]+)', block.group(1) if block else "", re.MULTILINE):
        if re.sub(r"[-_.]+", "-", requirement).lower() not in runtime:
            yield f"requirements-runtime.lock: does not pin {requirement}, a dependency in pyproject.toml"


def check_image() -> Iterator[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    for line in dockerfile.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in (w for w in words[1:-1] if not w.startswith("--")):
            if not (ROOT / source).exists():
                yield f"Dockerfile: COPY source {source} does not exist"
            elif dockerignored(source.strip("/"), patterns):
                yield f"Dockerfile: COPY source {source} is excluded from the build context by .dockerignore"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    config = json.loads(Path(argv[1]).read_text())
    problems = [*check_image(), *check_runtime_lock(), *check_k8s(load_k8s()), *check_compose(config)]
    for problem in problems:
        print(f"{PREFIX} {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
