"""Processes under benchmark: start pinned to a core, wait until they serve, read their CPU and RSS, stop them."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cores() -> tuple[str | None, str | None]:
    """(client core, gateway core): the upstream, load generator and Redis share the first; the gateway gets the
    second to itself. None when the machine has a single core (nothing is pinned then)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return str(available[0]), str(available[1])


def _tree(pid: int) -> list[int]:
    """A process and all its descendants (uvicorn or litellm may run their server in a child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            continue
    return out


def cpu_seconds(pid: int, *, only: bytes | None = None) -> float:
    """User + system CPU time of a process tree (live processes only); with `only`, of the processes whose command
    line contains it (the span exporter processes of a traced gateway)."""
    user, system = cpu_split(pid, only=only)
    return user + system


def cpu_split(pid: int, *, only: bytes | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds of a process tree, as `cpu_seconds` counts them: system is the kernel's work on
    the tree's behalf (its socket reads and writes, the loopback TCP stack, waking the peer)."""
    user = system = 0
    for p in _tree(pid):
        try:
            if only is not None and only not in Path(f"/proc/{p}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # utime, stime: fields 14 and 15 of stat
        system += int(fields[12])
    return user / _TICKS, system / _TICKS


def wait_idle(pid: int, *, window_s: float = 0.2, timeout_s: float = 30.0) -> float | None:
    """Wait until a process tree stops using CPU (at most one clock tick in a `window_s` window); the seconds it
    took, or None if it was still busy after `timeout_s`. A gateway that was loaded past what it serves keeps working
    on the requests the load generator abandoned when it stopped; the next scenario's run must not share the core
    with that work."""
    began = time.monotonic()
    before = cpu_seconds(pid)
    while True:
        time.sleep(window_s)
        now = cpu_seconds(pid)
        if now - before <= 1.0 / _TICKS:
            return time.monotonic() - began
        if time.monotonic() - began > timeout_s:
            return None
        before = now


def rss_mb(pid: int) -> float:
    """Resident set size of a process tree, in MiB."""
    pages = 0
    for p in _tree(pid):
        try:
            pages += int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except OSError:
            continue
    return pages * _PAGE_KB / 1024


@dataclass
class Served:
    """A started server, how long it took to serve its first request with 200, and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    startup_s: float
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class StartError(RuntimeError):
    pass


def start(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    core: str | None,
    log_dir: Path,
    probe: tuple[str, bytes, Mapping[str, str]] | None,
    timeout_s: float = 60.0,
) -> Served:
    """Spawn (pinned with taskset when a core is given) and wait for the first 200: to `probe` (path, body, headers)
    as a POST, or for the port to accept connections when there is no probe. Startup = spawn to that moment."""
    log = log_dir / f"{name}.log"
    full = ["taskset", "-c", core, *argv] if core is not None else list(argv)
    with log.open("wb") as out:
        began = time.perf_counter()
        proc = subprocess.Popen(full, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    deadline = began + timeout_s
    while True:
        if proc.poll() is not None:
            raise StartError(f"{name} exited with {proc.returncode} before serving; see {log}")
        if time.perf_counter() > deadline:
            proc.kill()
            raise StartError(f"{name} did not serve within {timeout_s:.0f}s; see {log}")
        if _ready(port, probe):
            return Served(name, proc, port, time.perf_counter() - began, log)
        time.sleep(0.005)


def _ready(port: int, probe: tuple[str, bytes, Mapping[str, str]] | None) -> bool:
    try:
        if probe is None:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        path, body, headers = probe
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("POST", path, body=body, headers={"content-type": "application/json", **headers})
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        finally:
            conn.close()
    except OSError:
        return False
