"""A real `redis-server` process for tests: free loopback port, no persistence, killable and restartable."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One `redis-server` process without persistence; it can be killed and started again on the same port."""

    def __init__(self, password: str | None = None, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: a certificate and its key; the server then speaks TLS only (and trusts no client certificate)."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = _free_port()
        self.password = password
        self.tls = tls
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            cert, key = self.tls
            args[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
            args += ["--tls-auth-clients", "no"]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(self.url, socket_timeout=0.5, **self.client_tls()) as client:
                    client.ping()
                return
            except redis.exceptions.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def client_tls(self) -> dict[str, str]:
        """What a client needs to trust this server's certificate."""
        return {"ssl_ca_certs": str(self.tls[0])} if self.tls else {}

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()  # a stopped process dies of SIGKILL too
            self._process.wait(timeout=10)
            self._process = None

    def pause(self) -> None:
        """Stop the process (SIGSTOP): connections stay open and nothing answers, like a Redis stuck or cut off."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        with redis.Redis.from_url(self.url, socket_timeout=2, **self.client_tls()) as client:
            client.flushall()
