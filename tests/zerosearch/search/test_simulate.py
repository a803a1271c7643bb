"""SimulatedSearch against real OpenAI-compatible HTTP servers on loopback."""

import re
import time
from dataclasses import replace

import pytest

from zerosearch.llm import ServerChatLLM
from zerosearch.retry import RetryConfig
from zerosearch.search.base import SearchRequest
from zerosearch.search.simulate import SimulatedSearch


def simulator(mode: str = "echo", docs: int = 3, sleep_s: float = 1.0):
    """Replies as a simulation LLM would. Modes: `echo` writes documents quoting the query, `slow`
    sleeps past the client's timeout, `error` answers HTTP 500, `blank` replies with no documents."""

    def reply(prompt: str):
        if mode == "error":
            return 500
        if mode == "blank":
            return "\n \n"
        query = re.search(r"Query: (.*)", prompt).group(1)
        text = "\n".join(f"Doc {i + 1}: page {i + 1} about {query}." for i in range(docs))
        return ("sleep", sleep_s, text) if mode == "slow" else text

    return reply


@pytest.fixture
def start_server(chat_server):
    return lambda **kwargs: chat_server(simulator(**kwargs))


FAST_RETRY = RetryConfig(concurrency=4, max_retries=2, backoff_s=0.01)

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
    backend = SimulatedSearch(
        ServerChatLLM([server.url], "m", retry=replace(FAST_RETRY, timeout_s=0.3)), "prompt", topk=2
    )

    start = time.monotonic()
    results = backend.search([SearchRequest("anything", "q?", ("a",))])

    assert time.monotonic() - start < 5
    assert results[0].failed and results[0].documents == []
    assert len(server.bodies) == 1 + FAST_RETRY.max_retries
    assert backend.stats["retries"] == FAST_RETRY.max_retries
    assert backend.stats["failures"] == 1 and backend.stats["requests"] == 1


def test_retry_moves_to_the_next_server(start_server):
    dead, alive = start_server(mode="error"), start_server()
    llm = ServerChatLLM([dead.url, alive.url], "m", retry=RetryConfig(concurrency=1, max_retries=1, backoff_s=0.01))
    backend = SimulatedSearch(llm, "prompt", topk=2)

    results = backend.search([SearchRequest("first")])

    assert results[0].documents == ["page 1 about first.", "page 2 about first."]
    assert (len(dead.bodies), len(alive.bodies)) == (1, 1)


def test_bad_configuration_fails_at_construction():
    with pytest.raises(ValueError, match="style"):
        SimulatedSearch(ServerChatLLM(["http://127.0.0.1:9/v1"], "m"), "fancy", topk=2)
    with pytest.raises(ValueError, match="URL"):
        ServerChatLLM([], "m")


def test_a_key_the_server_quotes_back_never_reaches_the_log(chat_server, caplog):
    key = "sk-live-0123456789abcdef"
    server = chat_server(lambda prompt: ("status", 401, f"Incorrect API key provided: {key}. Bearer {key}"))
    llm = ServerChatLLM([server.url], "m", api_key=key, retry=RetryConfig(max_retries=1, backoff_s=0.01))
    backend = SimulatedSearch(llm, "prompt", topk=2)

    [result] = backend.search([SearchRequest("anything", "q?", ("a",))])

    assert result.failed and backend.stats["failures"] == 1
    assert "Incorrect API key provided: ***" in caplog.text and "401" in caplog.text
    assert key not in caplog.text
