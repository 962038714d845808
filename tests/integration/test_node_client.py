"""A second real client guards compatibility: the official `openai` Node client (pinned in tests/node) runs a chat
and a streamed chat against polyroute, and meets its 401 as the typed error it knows."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.processes import REPO_ROOT
from tests.support.protocol_stack import AGENT_KEY, ProtocolStack, protocol_stack

NODE_DIR = REPO_ROOT / "tests" / "node"


@pytest.fixture(scope="module")
def agent_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProtocolStack]:
    with protocol_stack(tmp_path_factory.mktemp("node")) as started:
        yield started


def run_node_client(stack: ProtocolStack, model: str) -> dict[str, object]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the Node client is not installed: run ./scripts/setup --test (node, then npm ci in tests/node)")
    done = subprocess.run(
        [node, "chat.mjs", stack.openai_url, AGENT_KEY, model],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(("model", "deployment", "echo"), [("translated", "qwen-coder", "[sim-vllm] echo: "),
                                                         ("native", "qwen-cloud", "[sim-cloud] echo: ")])
def test_openai_node_client_chat_and_streamed_chat(
    agent_stack: ProtocolStack, model: str, deployment: str, echo: str
) -> None:
    result = run_node_client(agent_stack, model)
    reply, streamed = result["reply"], result["stream"]
    assert isinstance(reply, dict) and isinstance(streamed, dict)
    assert reply["content"] == echo + "hello from node"
    assert reply["finish"] == "stop" and reply["deployment"] == deployment
    assert reply["usage"]["prompt_tokens"] > 0 and reply["usage"]["completion_tokens"] > 0
    assert streamed["text"] == reply["content"]
    assert streamed["chunks"] > 3 and streamed["finish"] == "stop"  # several deltas, then the finish chunk
    assert streamed["usage"]["completion_tokens"] == reply["usage"]["completion_tokens"]
    assert result["refused"] == {"status": 401, "type": "authentication_error", "name": "AuthenticationError"}
