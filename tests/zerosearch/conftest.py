from collections.abc import Callable

import pytest

from tests.zerosearch.chat_server import FakeChatServer, Reply
from verl.utils.tiny_model import build_tokenizer
from zerosearch import prompts


@pytest.fixture(scope="module")
def tokenizer():
    """A small tokenizer that knows the policy's instruction and action tags."""
    return build_tokenizer(
        [prompts.policy_prompt("Who wrote Hamlet?"), "<search> q </search> <answer> a </answer>"], 600
    )


@pytest.fixture
def chat_server():
    """Starts fake chat servers (``chat_server(reply)``) and stops them after the test."""
    servers = []

    def start(reply: Callable[[str], Reply]) -> FakeChatServer:
        servers.append(FakeChatServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
