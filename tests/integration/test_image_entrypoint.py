"""The container image's start command, run outside a container the way the image runs it.

No container engine runs in CI, so this reads the Dockerfile's final stage (ENV, ENTRYPOINT, CMD, HEALTHCHECK,
STOPSIGNAL) and starts what `docker run IMAGE` would start, with the same flags and environment, except for what
only exists inside the image: its virtualenv (the image's VIRTUAL_ENV) is this test's virtualenv, the mounted
policy is a copy of deploy/policy/policy.yaml, the port is a free one, and the provider key is a dummy.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.processes import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
EXAMPLE_POLICY = REPO / "deploy" / "policy" / "policy.yaml"
START_TIMEOUT_S = 30.0
HEALTHCHECK_TIMEOUT_S = 30.0
EXIT_MARGIN_S = 10.0
DRAIN_PROBE_S = 1.0


@dataclass
class ImageConfig:
    """What the final stage of the Dockerfile declares about how the container runs."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    entrypoint_exec_form: bool = True
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    stop_signal: str = "SIGTERM"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, with comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    out = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _expand(value: str, known: dict[str, str]) -> str:
    """Docker's `$VAR` / `${VAR}` substitution in ENV values, from ARG defaults and earlier ENV."""
    return re.sub(
        r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))",
        lambda m: known.get(m.group(1) or m.group(2), ""),
        value,
    )


def _exec_or_shell(arguments: str) -> tuple[list[str], bool]:
    """A JSON array (exec form) or shell form, as docker turns it into argv."""
    if arguments.startswith("["):
        argv = json.loads(arguments)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), arguments
        return argv, True
    return ["/bin/sh", "-c", arguments], False


def read_image_config(path: Path, base_env: dict[str, str]) -> ImageConfig:
    """The runtime settings of the last stage; `base_env` stands in for the base image's environment."""
    instructions = _instructions(path.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    config = ImageConfig()
    known = dict(base_env)
    cmd_set = False
    for keyword, arguments in instructions[last_from + 1 :]:
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            known.setdefault(name, default.strip('"'))
        elif keyword == "ENV":
            words = shlex.split(arguments)
            pairs = [w.split("=", 1) for w in words] if "=" in words[0] else [[words[0], " ".join(words[1:])]]
            for name, raw in pairs:
                value = _expand(raw, known)
                config.env[name] = known[name] = value
        elif keyword == "ENTRYPOINT":
            config.entrypoint, config.entrypoint_exec_form = _exec_or_shell(arguments)
            if not cmd_set:  # as in Docker: ENTRYPOINT drops the CMD inherited from the base image
                config.cmd = []
        elif keyword == "CMD":
            config.cmd, _ = _exec_or_shell(arguments)
            cmd_set = True
        elif keyword == "HEALTHCHECK":
            options, _, command = arguments.partition("CMD ")
            assert options.strip() == "" or options.strip().startswith("--"), f"unexpected HEALTHCHECK {arguments}"
            config.healthcheck, _ = _exec_or_shell(command.strip())
        elif keyword == "STOPSIGNAL":
            config.stop_signal = arguments
    return config


def _host_value(value: str, image_venv: str, venv: str) -> str:
    """A path inside the image's virtualenv, turned into the same path in this test's virtualenv."""
    return re.sub(rf"(?<![^:=\s]){re.escape(image_venv)}(?=/|:|$)", venv, value)


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def _request_in_flight(port: int) -> Iterator[Callable[[], tuple[int, bytes]]]:
    """A request whose body is half sent; the function it yields sends the rest and returns (status, body).

    It asks for an alias the policy lacks, so the gateway answers 404 itself and never calls an upstream.
    """
    body = b'{"model": "no-such-alias", "messages": [{"role": "user", "content": "sent during shutdown"}]}'
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=HEALTHCHECK_TIMEOUT_S) as sock:
        sock.sendall(head + body[:10])
        time.sleep(DRAIN_PROBE_S)  # the server has read the headers: the request is in progress

        def finish() -> tuple[int, bytes]:
            sock.sendall(body[10:])
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            status_line, _, rest = received.partition(b"\r\n")
            return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]

        yield finish


def _run_healthcheck(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable is not None, f"HEALTHCHECK runs {argv[0]!r}, which is not on the image's PATH"
    return subprocess.run(
        [executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=HEALTHCHECK_TIMEOUT_S
    )


@pytest.fixture
def host_environment() -> dict[str, str]:
    """This machine's environment, less any POLYROUTE_* setting: the image's ENV decides those."""
    return {k: v for k, v in os.environ.items() if not k.startswith("POLYROUTE_")}


@pytest.mark.parametrize(
    "docker_run_env",
    [
        pytest.param({}, id="image-defaults"),
        pytest.param({"POLYROUTE_WORKERS": "2"}, id="docker-run-e-POLYROUTE_WORKERS=2"),
    ],
)
def test_image_command_serves_passes_its_healthcheck_and_stops_cleanly(
    tmp_path: Path, host_environment: dict[str, str], docker_run_env: dict[str, str]
) -> None:
    image = read_image_config(DOCKERFILE, host_environment)
    assert image.entrypoint_exec_form, "ENTRYPOINT must be exec form, so the stop signal reaches the server itself"
    assert image.healthcheck, "the Dockerfile declares no HEALTHCHECK"
    assert "VIRTUAL_ENV" in image.env, "the Dockerfile must set VIRTUAL_ENV to the virtualenv it installs into"
    image_policy = Path(image.env["POLYROUTE_POLICY"])
    grace_s = float(image.env.get("POLYROUTE_SHUTDOWN_GRACE_SECONDS", "30"))

    venv = str(Path(sys.executable).parent.parent)
    env = dict(host_environment)
    env.update({k: _host_value(v, image.env["VIRTUAL_ENV"], venv) for k, v in image.env.items()})
    policy = tmp_path / image_policy.name  # what the user mounts at POLYROUTE_POLICY
    shutil.copyfile(EXAMPLE_POLICY, policy)
    port = free_port()
    env.update(
        {
            "POLYROUTE_POLICY": str(policy),
            "POLYROUTE_PORT": str(port),
            "DASHSCOPE_API_KEY": "sk-dummy-not-a-key",
            "TMPDIR": str(tmp_path),  # the image's /tmp
            **docker_run_env,
        }
    )

    argv = [*image.entrypoint, *image.cmd]
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable == str(Path(sys.executable).parent / argv[0]), (
        f"{argv[0]!r} should resolve to this virtualenv's script, as it resolves to the image's; got {executable}"
    )
    server = ManagedProcess([executable, *argv[1:]], label="image-entrypoint", env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthz(port):
            if not server.running:
                raise server.fail(f"exited with code {server.popen.returncode} before /healthz answered")
            if time.monotonic() > deadline:
                raise server.fail(f"GET /healthz did not answer 200 within {START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)

        check = _run_healthcheck(image.healthcheck, env)
        assert check.returncode == 0, f"HEALTHCHECK failed against a healthy server:\n{check.stderr}"

        # A request still arriving when the stop signal comes must be answered before the process exits.
        with _request_in_flight(port) as finish:
            started = time.monotonic()
            server.send_signal(signal.Signals[image.stop_signal])
            time.sleep(DRAIN_PROBE_S)
            assert server.running, f"exited before answering a request in flight:\n{server.logs()}"
            status, answer = finish()
        assert status == 404 and b'"error"' in answer, f"the in-flight request got {status}: {answer!r}"
        try:
            code = server.popen.wait(grace_s + EXIT_MARGIN_S)
        except subprocess.TimeoutExpired:
            raise server.fail(f"still running {grace_s + EXIT_MARGIN_S:.0f}s after {image.stop_signal}") from None
        # Clean: exit status 0, or ended by the stop signal itself after the drain (uvicorn re-raises the signal
        # it handled, so `docker stop` reports 143); never an error status, and never a SIGKILL.
        assert code in (0, -signal.Signals[image.stop_signal]), f"exit code {code}:\n{server.logs()}"
        assert time.monotonic() - started < grace_s, "the drain outlasted its grace though its one request was answered"

        after = _run_healthcheck(image.healthcheck, env)
        assert after.returncode != 0, "HEALTHCHECK still passes with the server stopped: it checks nothing"
    finally:
        server.kill()
