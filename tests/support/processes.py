"""Start real processes on 127.0.0.1 for tests (simulated upstreams, redis-server, the gateway); stop them for sure."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from gateway.demo.sim_flavors import FLAVORS

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0  # a bound on a hung start, not a speed check: a busy machine starts slowly
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.02


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (another process may still take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _LiveProcesses:
    """Every process started here, killed at interpreter exit if a test forgot to stop it."""

    def __init__(self) -> None:
        self.processes: set[ManagedProcess] = set()
        self._log_dir: Path | None = None
        atexit.register(self.kill_all)

    def log_dir(self) -> Path:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="polyroute-test-procs-"))
        return self._log_dir

    def kill_all(self) -> None:
        for process in list(self.processes):
            process.kill()
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)


_LIVE = _LiveProcesses()


class ManagedProcess:
    """A child in its own process group, its stdout and stderr in one temp file (a pipe could fill and block it)."""

    def __init__(self, args: Sequence[str], *, label: str, env: Mapping[str, str] | None = None) -> None:
        self.args = list(args)
        self.label = label
        handle, path = tempfile.mkstemp(prefix=f"{label}-", suffix=".log", dir=_LIVE.log_dir())
        self.log_path = Path(path)
        with os.fdopen(handle, "wb") as log:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # its own group, so stop() also reaches worker children
            )
        _LIVE.processes.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def logs(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, sig: signal.Signals) -> None:
        if self.running:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL the whole group; returns the exit code."""
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the process and anything left in its group, then reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # stuck in the kernel: nothing more to do
            self.popen.wait(STOP_TIMEOUT_S)
        _LIVE.processes.discard(self)

    def fail(self, problem: str) -> RuntimeError:
        """Stop the process and describe why, with its output."""
        self.stop(timeout=2.0)
        return RuntimeError(f"{self.label}: {problem}\n--- output of {' '.join(self.args)} ---\n{self.logs()}")

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        """The first output line starting with `prefix`; raises if the process dies or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.logs().splitlines():
                if line.startswith(prefix):
                    return line
            if not self.running:
                raise self.fail(f"exited with code {self.popen.returncode} before printing {prefix!r}")
            if time.monotonic() > deadline:
                raise self.fail(f"did not print {prefix!r} within {timeout:.0f}s")
            time.sleep(_POLL_S)


class _Stoppable:
    """What every started service offers: stop(), logs(), and use as a context manager."""

    process: ManagedProcess

    def stop(self) -> None:
        self.process.stop()

    def logs(self) -> str:
        return self.process.logs()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _http_json(method: str, url: str, payload: Any = None, timeout: float = 5.0) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:  # an HTTPError holds the response's socket until closed
            detail = exc.read().decode(errors="replace")
        raise RuntimeError(f"{method} {url} -> HTTP {exc.code}: {detail}") from None


class Upstream(_Stoppable):
    """A simulated upstream process (gateway.demo.simulated) and its admin endpoints."""

    def __init__(self, process: ManagedProcess, *, flavor: str, name: str, port: int, api_key: str | None) -> None:
        self.process = process
        self.flavor = flavor
        self.name = name
        self.port = port
        self.api_key = api_key
        self.root_url = f"http://{HOST}:{port}"
        self.base_url = self.root_url + FLAVORS[flavor].prefix  # what an OpenAI client or a policy points at

    def inject(self, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue faults (`{"fault": ..., "count": N, "model": ..., **params}`); returns what is now pending."""
        answer = _http_json("POST", f"{self.root_url}/_sim/faults", {"faults": faults})
        pending: list[dict[str, Any]] = answer["pending"]
        return pending

    def clear(self) -> None:
        """Drop every queued fault."""
        _http_json("DELETE", f"{self.root_url}/_sim/faults")

    def stats(self) -> dict[str, Any]:
        """Request counts per path and model, faults served, and the last request's headers and JSON body."""
        stats: dict[str, Any] = _http_json("GET", f"{self.root_url}/_sim/stats")
        return stats

    def reset_stats(self) -> None:
        _http_json("DELETE", f"{self.root_url}/_sim/stats")

    def last_header(self, name: str) -> str | None:
        """A header of the last request, looked up case-insensitively."""
        headers: dict[str, str] = self.stats()["last_headers"]
        return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def start_simulated(
    flavor: str,
    *,
    name: str,
    api_key: str | None = None,
    models: Sequence[str] | None = None,
    chunks: int = 20,
    timeout: float = START_TIMEOUT_S,
    engine_metrics: str | None = None,
    slots: int = 4,
) -> Upstream:
    """Run `python -m gateway.demo.simulated` on a free loopback port and wait until it says READY."""
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}")
    args = [sys.executable, "-m", "gateway.demo.simulated", "--flavor", flavor, "--host", HOST, "--port", "0"]
    args += ["--name", name, "--chunks", str(chunks)]
    if api_key is not None:
        args += ["--api-key", api_key]
    if models:
        args += ["--models", ",".join(models)]
    if engine_metrics is not None:
        args += ["--engine-metrics", engine_metrics, "--slots", str(slots)]
    process = ManagedProcess(args, label=f"sim-{flavor}")
    ready = process.wait_for_line("READY ", timeout)
    port = int(ready.rsplit(":", 1)[1])
    return Upstream(process, flavor=flavor, name=name, port=port, api_key=api_key)


class RedisServer(_Stoppable):
    """The tests' one `redis-server` launcher: loopback, no persistence, optionally a password and TLS only
    (`tls`: a certificate and its key; no client certificate is asked for). It can be killed, paused (SIGSTOP: it
    keeps its connections and answers nothing, like a Redis stuck or cut off) and started again on the same port."""

    def __init__(
        self, binary: str, port: int, directory: Path, timeout: float, *, password: str | None = None,
        tls: tuple[Path, Path] | None = None, extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.port = port
        self.password = password
        self.tls = tls
        auth = f":{password}@" if password else ""
        self.url = f"{'rediss' if tls else 'redis'}://{auth}{HOST}:{port}/0"
        self._directory = directory
        self._timeout = timeout
        self._extra_args = list(extra_args)
        self.process = self._spawn()

    def _spawn(self) -> ManagedProcess:
        args = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self._directory), "--daemonize", "no", *self._extra_args]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            cert, key = self.tls
            args[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
            args += ["--tls-auth-clients", "no"]
        process = ManagedProcess(args, label="redis")
        deadline = time.monotonic() + self._timeout
        while not self.ping():
            if not process.running:
                raise process.fail(f"exited with code {process.popen.returncode} before answering PING")
            if time.monotonic() > deadline:
                raise process.fail(f"did not answer PING within {self._timeout:.0f}s")
            time.sleep(_POLL_S)
        return process

    def client_tls(self) -> dict[str, str]:
        """What a client needs to trust this server's certificate."""
        return {"ssl_ca_certs": str(self.tls[0])} if self.tls else {}

    def ping(self) -> bool:
        """True when the server answers PING now."""
        try:
            with redis.Redis.from_url(self.url, socket_timeout=1.0, **self.client_tls()) as client:
                return bool(client.ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False

    def start(self) -> None:
        """Start again on the same port after `kill` (the data is gone: nothing is persisted)."""
        if not self.process.running:
            self.process = self._spawn()

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        """Stop and start again on the same port (the data is gone: nothing is persisted)."""
        self.process.stop()
        self.process = self._spawn()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        with redis.Redis.from_url(self.url, socket_timeout=2, **self.client_tls()) as client:
            client.flushall()


def have_redis() -> bool:
    return shutil.which("redis-server") is not None


def start_redis(
    *, password: str | None = None, tls: tuple[Path, Path] | None = None, timeout: float = START_TIMEOUT_S,
    extra_args: Sequence[str] = (),
) -> RedisServer:
    """Run `redis-server` on a free loopback port with `--save '' --appendonly no` (and `extra_args`), wait for PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (check with have_redis() to skip)")
    directory = Path(tempfile.mkdtemp(prefix="redis-", dir=_LIVE.log_dir()))
    for attempt in range(3):
        try:
            return RedisServer(
                binary, free_port(), directory, timeout, password=password, tls=tls, extra_args=extra_args
            )
        except RuntimeError as exc:
            # Another process may have taken the port between free_port() and the bind: try another one.
            if "address already in use" not in str(exc).lower() or attempt == 2:
                raise
    raise AssertionError("unreachable")


class GatewayProcess(_Stoppable):
    """`polyroute serve` in a child process on loopback."""

    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://{HOST}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def send_signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response's socket until closed
        return False
    except (urllib.error.URLError, OSError):
        return False


def worker_pids(gateway: GatewayProcess) -> set[int]:
    """The uvicorn worker processes under a `--workers N` gateway's supervisor (read from /proc)."""
    pids = set()
    supervisor = gateway.process.pid
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            pids.add(int(child))
    return pids


def healthy(gateway: GatewayProcess) -> bool:
    """Whether the gateway answers /healthz with 200 now."""
    return _healthy(gateway.url("/healthz"))


_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "no_proxy", "all_proxy"})


def _gateway_env(additions: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without POLYROUTE_* and proxy settings (tests state what they want), plus
    `additions`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("POLYROUTE_") and key.lower() not in _PROXY_VARIABLES
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(additions)
    return env


def start_gateway(
    policy_path: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    workers: int = 1,
    timeout: float = START_TIMEOUT_S,
) -> GatewayProcess:
    """Run `python -m gateway.cli serve --policy P --host 127.0.0.1 --port N` and wait for GET /healthz = 200."""
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        args = [sys.executable, "-m", "gateway.cli", "serve", "--policy", str(policy_path)]
        args += ["--host", HOST, "--port", str(chosen)]
        if workers != 1:
            args += ["--workers", str(workers)]
        process = ManagedProcess(args, label="gateway", env=_gateway_env(env or {}))
        health = f"http://{HOST}:{chosen}/healthz"
        deadline = time.monotonic() + timeout
        while not _healthy(health):
            if not process.running:
                if "address already in use" in process.logs().lower() and attempt + 1 < attempts:
                    break  # lost the port race; try another one
                raise process.fail(f"exited with code {process.popen.returncode} before /healthz answered")
            if time.monotonic() > deadline:
                raise process.fail(f"GET /healthz did not answer 200 within {timeout:.0f}s")
            time.sleep(_POLL_S * 2)
        else:
            return GatewayProcess(process, chosen)
        process.stop()
    raise AssertionError("unreachable")
