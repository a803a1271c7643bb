"""Deadlines and cool-downs of remote calls, against real HTTP servers on loopback: a reply
trickled a byte at a time is cut off at the attempt deadline, a batch never outlives its own
deadline whatever the retries, and a server that keeps failing is skipped while another answers."""

import json
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest

from tests.loopback import LoopbackServer, read_body, respond
from zerosearch.llm import ServerChatLLM
from zerosearch.retry import DeadlineExceeded, RetryConfig, within
from zerosearch.search.base import SearchRequest
from zerosearch.search.google import GoogleSearch
from zerosearch.search.simulate import SimulatedSearch
from zerosearch.search.wiki import WikiSearch


@contextmanager
def trickle_server(body: bytes, seconds_per_byte: float):
    """Answers every POST at once with its headers, then sends ``body`` one byte at a time: each
    read returns quickly, so a client's per-read timeout never fires."""
    hits: list[str] = []

    def trickle(handler):
        read_body(handler)
        hits.append(handler.path)
        respond(handler, 200, body, send_body=False)
        for i in range(len(body)):
            if server.stopping.wait(seconds_per_byte):
                return
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()

    with LoopbackServer(trickle) as server:
        yield server.url, hits


CHAT_REPLY = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "sim",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Doc 1: late."}, "finish_reason": "stop"}],
    }
).encode()


def test_within_returns_the_value_or_raises_at_the_deadline():
    assert within(lambda: 7, 1.0) == 7
    with pytest.raises(ValueError, match="boom"):
        within(lambda: (_ for _ in ()).throw(ValueError("boom")), 1.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        within(lambda: time.sleep(5), 0.3)
    assert time.monotonic() - started < 1.0
    with pytest.raises(DeadlineExceeded):
        within(lambda: 7, 0.0)  # a batch deadline already passed: nothing is started


@pytest.mark.parametrize("backend", ["wiki", "simulator"])
def test_a_trickled_reply_is_cut_off_at_the_attempt_deadline(backend):
    # The whole body would take 60 s: before deadlines, per-read timeouts let it run to the end.
    with trickle_server(CHAT_REPLY + b" " * 400, seconds_per_byte=0.15) as (url, hits):
        retry = RetryConfig(max_retries=1, backoff_s=0.01)
        if backend == "wiki":
            search = WikiSearch(f"{url}/retrieve", topk=1, retry=replace(retry, timeout_s=1.0))
        else:
            search = SimulatedSearch(
                ServerChatLLM([f"{url}/v1"], "sim", retry=replace(retry, timeout_s=1.0)), "prompt", 1
            )
        started = time.monotonic()
        [result] = search.search([SearchRequest("capital of france", "q?", ("Paris",))])
        seconds = time.monotonic() - started
    assert result.failed and result.documents == []
    assert 2.0 <= seconds < 3.5  # two attempts, each cut off at 1 s, and a short backoff
    assert len(hits) == 2
    assert search.stats["timeouts"] == 2 and search.stats["retries"] == 1 and search.stats["failures"] == 1


def test_a_batch_never_outlives_its_deadline_whatever_the_retries(chat_server):
    server = chat_server(lambda prompt: ("sleep", 5.0, "Doc 1: too late."))
    retry = RetryConfig(concurrency=1, max_retries=5, backoff_s=0.01, batch_timeout_s=2.5)
    llm = ServerChatLLM([server.url], "sim", retry=replace(retry, timeout_s=1.0))
    started = time.monotonic()
    replies = llm.complete([[{"role": "user", "content": f"Query: q{i}"}] for i in range(3)], 16, 0.0)
    seconds = time.monotonic() - started
    # Without the batch deadline: 3 requests x 6 attempts x 1 s, one after another.
    assert replies == [None, None, None]
    assert seconds < 3.5
    assert llm.stats["timeouts"] >= 2 and len(server.bodies) <= 3


def test_a_slow_serpapi_call_is_cut_off():
    class SlowClient:
        def search(self, params):
            time.sleep(10)
            return {}

    search = GoogleSearch(1, retry=RetryConfig(timeout_s=0.5, max_retries=0), client=SlowClient())
    started = time.monotonic()
    [result] = search.search([SearchRequest("anything")])
    assert result.failed and time.monotonic() - started < 2.0
    assert search.stats["timeouts"] == 1


def test_a_failing_server_cools_down_while_the_other_carries_the_load(chat_server):
    failing, healthy = chat_server(lambda prompt: 500), chat_server(lambda prompt: "Doc 1: fine.")
    retry = RetryConfig(concurrency=1, max_retries=1, backoff_s=0.01, cooldown_after=2, cooldown_s=60)
    search = SimulatedSearch(ServerChatLLM([failing.url, healthy.url], "sim", retry=retry), "prompt", 1)

    results = search.search([SearchRequest(f"query {i}") for i in range(8)])

    assert all(r.documents == ["fine."] for r in results)
    # Servers are used in turn: the failing one gets the first attempt of requests 1 and 2, then rests.
    assert (len(failing.bodies), len(healthy.bodies)) == (2, 8)
    assert search.stats["cooldowns"] == 1 and search.stats["retries"] == 2


def test_when_every_server_cools_down_requests_still_go_out(chat_server):
    first, second = chat_server(lambda prompt: 500), chat_server(lambda prompt: 500)
    retry = RetryConfig(concurrency=1, max_retries=1, backoff_s=0.01, cooldown_after=1, cooldown_s=60)
    search = SimulatedSearch(ServerChatLLM([first.url, second.url], "sim", retry=retry), "prompt", 1)

    results = search.search([SearchRequest("a"), SearchRequest("b")])

    assert all(r.failed for r in results) and search.stats["failures"] == 2
    assert len(first.bodies) + len(second.bodies) == 4  # every attempt reached a server


def test_one_retry_config_per_server_group_and_none_for_local_work(tmp_path):
    from zerosearch.config import ZeroSearchConfig
    from zerosearch.critic import build_critic
    from zerosearch.search import build_backend

    config = ZeroSearchConfig()
    config.search.retry.timeout_s, config.critictor.retry.timeout_s = 7.0, 9.0
    assert config.search.retry is not config.critictor.retry
    wiki = build_backend("wiki", config.search)
    assert wiki.backend.retry.timeout_s == 7.0 and wiki.backend.retry.max_retries == 3
    config.critictor.backend = "server"
    assert build_critic(config.critictor).llm.retry.timeout_s == 9.0
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"contents": "Paris\nThe capital of France."}) + "\n")
    config.search.corpus_path = str(corpus)
    local = build_backend("corpus", config.search)
    assert local.backend.retry.timeout_s is None and local.backend.retry.batch_timeout_s is None
    assert local.backend.retry.max_retries == config.search.retry.max_retries
