# polyroute container image.
#
#   docker build -t polyroute .
#   docker run --rm -p 8080:8080 -e DASHSCOPE_API_KEY -v "$PWD/deploy/policy:/etc/polyroute:ro" polyroute
#
# The policy is read from /etc/polyroute/policy.yaml (POLYROUTE_POLICY): mount a directory holding policy.yaml
# at /etc/polyroute. A directory mount sees edits, which the gateway reloads; a single-file mount keeps the old
# file once an editor replaces it. Every other setting is a POLYROUTE_* environment variable; arguments after
# the image name are passed to `polyroute serve` (e.g. `--workers 4`).
# The image runs as uid/gid 10001 and writes nothing outside /tmp, so it works with a read-only root
# filesystem when /tmp is a writable volume.

# ---- builder: a virtualenv with the hash-pinned runtime dependencies, then polyroute itself ----
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/polyroute
ENV PATH=/opt/polyroute/bin:$PATH

WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when the lock changes. Wheels only, so the
# builder needs no compiler, and every file is checked against the hash in the lock.
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps -r requirements-runtime.lock

COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --no-deps . \
    && polyroute --help >/dev/null

# ---- runtime ----
FROM python:3.11-slim

ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="polyroute" \
      org.opencontainers.image.description="OpenAI-compatible LLM gateway: route by declarative policy between cloud and self-hosted models" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

RUN groupadd --system --gid 10001 polyroute \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin polyroute \
    && mkdir -p /etc/polyroute

COPY --from=builder /opt/polyroute /opt/polyroute

ENV VIRTUAL_ENV=/opt/polyroute \
    PATH=/opt/polyroute/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POLYROUTE_POLICY=/etc/polyroute/policy.yaml \
    POLYROUTE_HOST=0.0.0.0 \
    POLYROUTE_PORT=8080 \
    POLYROUTE_WORKERS=1 \
    POLYROUTE_SHUTDOWN_GRACE_SECONDS=25

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# Liveness of the process only (readiness, which depends on Redis, is /readyz). Python's urllib because the
# slim image has no curl; proxies are disabled so an HTTP(S)_PROXY meant for upstreams is never used here.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('POLYROUTE_PORT', '8080'), timeout=4)"]

# On SIGTERM the server stops accepting, drains in-flight requests and streams for up to
# POLYROUTE_SHUTDOWN_GRACE_SECONDS, then exits; give the container a stop timeout above that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["polyroute", "serve"]
CMD []
