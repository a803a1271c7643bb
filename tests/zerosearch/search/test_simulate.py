"""SimulatedSearch against real OpenAI-compatible HTTP servers on loopback."""

import asyncio
import re
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from zerosearch.llm import ServerChatLLM
from zerosearch.retry import RetryPolicy
from zerosearch.search.base import SearchRequest
from zerosearch.search.simulate import SimulatedSearch


class FakeSimulator:
    """A chat-completions server that records request bodies. Modes: `echo` writes documents
    quoting the query, `slow` sleeps past the client's timeout, `error` answers HTTP 500,
    `blank` replies with no documents."""

    def __init__(self, mode: str = "echo", docs: int = 3, sleep_s: float = 1.0):
        self.mode, self.docs, self.sleep_s = mode, docs, sleep_s
        self.bodies: list[dict] = []
        app = FastAPI()
        app.post("/v1/chat/completions")(self._complete)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fake simulator did not start"
            time.sleep(0.01)

    async def _complete(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        if self.mode == "error":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if self.mode == "slow":
            await asyncio.sleep(self.sleep_s)
        prompt = body["messages"][-1]["content"]
        query = re.search(r"Query: (.*)", prompt).group(1)
        content = (
            "\n \n"
            if self.mode == "blank"
            else "\n".join(f"Doc {i + 1}: page {i + 1} about {query}." for i in range(self.docs))
        )
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def stop(self):
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def start_server():
    servers = []

    def start(**kwargs) -> FakeSimulator:
        servers.append(FakeSimulator(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


FAST_RETRY = RetryPolicy(concurrency=4, max_retries=2, backoff_s=0.01)

ROWS = [  # (query, question, answers, noisy); no answer or question appears in another row's query
    ("tallest peak asia", "Which mountain is the highest on Earth?", ("Everest",), False),
    ("author of hamlet", "Who wrote Hamlet?", ("Shakespeare", "William Shakespeare"), True),
    ("capital france", "What is the capital of France?", ("Paris",), False),
    ("moon landing year", "When did people first land on the Moon?", ("1969",), True),
    ("longest river africa", "Which river flows through Cairo?", ("Nile",), False),
]


@pytest.mark.parametrize("style", ["prompt", "sft"])
def test_each_prompt_carries_its_own_row(start_server, style):
    server = start_server(docs=5)
    backend = SimulatedSearch(
        ServerChatLLM([server.url], "sim-model", retry=FAST_RETRY), style, topk=3, max_tokens=77, temperature=0.0
    )
    assert backend.name == f"simulate_{style}"
    requests = [SearchRequest(q, question, answers, noisy) for q, question, answers, noisy in ROWS]

    results = backend.search(requests)

    # In request order, truncated to topk.
    for (query, *_), result in zip(ROWS, results, strict=True):
        assert not result.failed
        assert result.documents == [f"page {i} about {query}." for i in (1, 2, 3)]
    assert len(server.bodies) == len(ROWS)
    for body in server.bodies:
        assert (body["model"], body["max_tokens"], body["temperature"]) == ("sim-model", 77, 0.0)
        prompt = body["messages"][-1]["content"]
        rows = [row for row in ROWS if f"Query: {row[0]}" in prompt]
        assert len(rows) == 1, prompt
        _, question, answers, noisy = rows[0]
        others = [r for r in ROWS if r is not rows[0]]
        assert not any(o[1] in prompt or o[2][0] in prompt for o in others), "another row leaked"
        if noisy:
            assert question not in prompt and not any(a in prompt for a in answers)
        else:
            assert question in prompt and all(a in prompt for a in answers)
    assert backend.stats["requests"] == len(ROWS) and backend.stats["failures"] == 0


def test_requests_rotate_over_servers(start_server):
    servers = [start_server(), start_server()]
    backend = SimulatedSearch(ServerChatLLM([s.url for s in servers], "m", retry=FAST_RETRY), "prompt", topk=2)

    results = backend.search([SearchRequest(f"query {i}") for i in range(6)])

    assert [r.documents[0] for r in results] == [f"page 1 about query {i}." for i in range(6)]
    assert [len(s.bodies) for s in servers] == [3, 3]


@pytest.mark.parametrize("mode", ["slow", "error", "blank"])
def test_failing_server_is_retried_then_fails(start_server, mode):
    server = start_server(mode=mode, sleep_s=1.5)
    backend = SimulatedSearch(ServerChatLLM([server.url], "m", timeout_s=0.3, retry=FAST_RETRY), "prompt", topk=2)

    start = time.monotonic()
    results = backend.search([SearchRequest("anything", "q?", ("a",))])

    assert time.monotonic() - start < 5
    assert results[0].failed and results[0].documents == []
    assert len(server.bodies) == 1 + FAST_RETRY.max_retries
    assert backend.stats["retries"] == FAST_RETRY.max_retries
    assert backend.stats["failures"] == 1 and backend.stats["requests"] == 1


def test_retry_moves_to_the_next_server(start_server):
    dead, alive = start_server(mode="error"), start_server()
    llm = ServerChatLLM([dead.url, alive.url], "m", retry=RetryPolicy(concurrency=1, max_retries=1, backoff_s=0.01))
    backend = SimulatedSearch(llm, "prompt", topk=2)

    results = backend.search([SearchRequest("first")])

    assert results[0].documents == ["page 1 about first.", "page 2 about first."]
    assert (len(dead.bodies), len(alive.bodies)) == (1, 1)


def test_bad_configuration_fails_at_construction():
    with pytest.raises(ValueError, match="style"):
        SimulatedSearch(ServerChatLLM(["http://127.0.0.1:9/v1"], "m"), "fancy", topk=2)
    with pytest.raises(ValueError, match="URL"):
        ServerChatLLM([], "m")
