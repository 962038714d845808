"""A real nginx on 127.0.0.1 balancing round-robin over gateway replicas, from a temp prefix, as the current user."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.processes import HOST, START_TIMEOUT_S, ManagedProcess, free_port

SERVED_BY = "x-served-by"  # the replica (host:port) that answered, added by nginx to every response
_POLL_S = 0.02

_CONFIG = """
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 64m;
    upstream gateways {{
{servers}
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_next_upstream off;
            proxy_read_timeout 60s;
            add_header {served_by} $upstream_addr always;
        }}
    }}
}}
"""


def have_nginx() -> bool:
    return nginx_binary() is not None


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


class Nginx:
    """`nginx -p PREFIX -c nginx.conf -e stderr` with `daemon off;`: master and worker in one process group."""

    def __init__(self, process: ManagedProcess, port: int, prefix: Path) -> None:
        self.process = process
        self.port = port
        self.prefix = prefix
        self.base_url = f"http://{HOST}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def logs(self) -> str:
        return self.process.logs()

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), SIGKILL of the group if it lingers; then the prefix is removed."""
        self.process.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_nginx(upstream_ports: Sequence[int], *, timeout: float = START_TIMEOUT_S) -> Nginx:
    """Balance round-robin over `127.0.0.1:<port>` for each of `upstream_ports`; returns once nginx accepts."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (check with have_nginx() to skip)")
    servers = "\n".join(f"        server {HOST}:{port};" for port in upstream_ports)
    for attempt in range(3):
        prefix = Path(tempfile.mkdtemp(prefix="polyroute-nginx-"))
        port = free_port()
        config = _CONFIG.format(prefix=prefix, servers=servers, host=HOST, port=port, served_by=SERVED_BY)
        (prefix / "nginx.conf").write_text(config)
        args = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
        process = ManagedProcess(args, label="nginx")
        try:
            _wait_listening(process, port, timeout)
        except RuntimeError as exc:
            shutil.rmtree(prefix, ignore_errors=True)
            # Another process may have taken the port between free_port() and the bind: try another one.
            if "address already in use" not in str(exc).lower() or attempt == 2:
                raise
            continue
        return Nginx(process, port, prefix)
    raise AssertionError("unreachable")


def _wait_listening(process: ManagedProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            pass
        if not process.running:
            raise process.fail(f"exited with code {process.popen.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise process.fail(f"did not listen on {HOST}:{port} within {timeout:.0f}s")
        time.sleep(_POLL_S)
