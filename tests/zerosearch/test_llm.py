"""The simulated search on a chat model hosted in-process (a Ray actor, LocalChatLLM): a tiny
random model end to end, and scripted actors for the parts a random model cannot make
deterministic (parsing, failures)."""

import pytest

from verl.utils.tiny_model import build_tiny_model
from zerosearch.llm import ChatModelActor, LocalChatLLM
from zerosearch.prompts import parse_documents
from zerosearch.retry import RetryConfig
from zerosearch.search.base import SearchRequest
from zerosearch.search.simulate import SimulatedSearch, request_messages

REQUESTS = [
    SearchRequest("capital france", "What is the capital of France?", ("Paris",)),
    SearchRequest("author of hamlet", "Who wrote Hamlet?", ("Shakespeare",), noisy=True),
    SearchRequest("moon landing", "When did people first land on the Moon?", ("1969",)),
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(
        build_tiny_model(tmp_path_factory.mktemp("simulator"), vocab_size=300, hidden_size=32, intermediate_size=64)
    )


def test_tiny_model_batch_in_order(ray_local, tiny_model):
    backend = SimulatedSearch(LocalChatLLM(tiny_model), "sft", topk=2, max_tokens=16)
    assert backend.name == "simulate_sft"

    results = backend.search(REQUESTS)

    # Greedy decoding of the same left-padded batch in this process must give the same documents.
    replies = ChatModelActor(tiny_model).generate([request_messages(r, 2, "sft") for r in REQUESTS], 16, 0.0)
    expected = [parse_documents(reply, 2) for reply in replies]
    assert [r.documents for r in results] == expected
    assert all(len(r.documents) <= 2 and r.failed == (not r.documents) for r in results)
    assert backend.stats["requests"] == 3
    assert backend.stats["failures"] == sum(not docs for docs in expected)


class ScriptedActor:
    """Quotes each prompt back as documents; a query starting with "mute" gets an empty reply and
    one starting with "crash" fails the whole call. Starting an actor takes seconds, so one serves
    every scripted test."""

    def __init__(self, model_path: str):
        self.calls = 0

    def generate(self, conversations, max_tokens, temperature):
        self.calls += 1
        prompts = [messages[-1]["content"] for messages in conversations]
        if any("Query: crash" in p for p in prompts):
            raise RuntimeError("out of memory")
        return [
            "" if "Query: mute" in p else f"Doc 1: {p.splitlines()[0]}\nDoc 2: second\nDoc 3: third" for p in prompts
        ]

    def call_count(self):
        return self.calls


class ScriptedLLM(LocalChatLLM):
    actor_class = ScriptedActor


@pytest.fixture(scope="module")
def scripted(ray_local):
    llm = ScriptedLLM("unused", retry=RetryConfig(max_retries=2, backoff_s=0.01))
    backend = SimulatedSearch(llm, "sft", topk=2)

    def run(requests):
        """Results, actor calls and stats of one search on the shared backend."""
        calls, stats = ray_local.get(llm._get_actor().call_count.remote()), backend.stats.copy()
        results = backend.search(requests)
        calls = ray_local.get(llm._get_actor().call_count.remote()) - calls
        return results, calls, backend.stats - stats

    return run


def test_one_actor_call_per_batch_and_unparsable_rows_fail(scripted):
    results, calls, stats = scripted([*REQUESTS[:2], SearchRequest("mute this", "Who?", ("x",))])

    assert results[0].documents == ["Query: capital france", "second"]
    assert results[1].documents == ["Query: author of hamlet", "second"]
    assert results[2].failed and results[2].documents == []
    assert calls == 1
    assert (stats["requests"], stats["failures"], stats["retries"]) == (3, 1, 0)


def test_failing_call_is_retried_then_the_batch_fails(scripted):
    results, calls, stats = scripted([*REQUESTS, SearchRequest("crash now")])

    assert all(r.failed and r.documents == [] for r in results)
    assert calls == 3
    assert (stats["requests"], stats["failures"], stats["retries"]) == (4, 4, 2)


def searched_together(backend, requests):
    """Each request searched alone, from a thread of its own, all starting at once."""
    import threading

    results = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def search(i):
        start.wait()
        [results[i]] = backend.search([requests[i]])

    threads = [threading.Thread(target=search, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_single_conversations_share_actor_calls(ray_local):
    """An asynchronous rollout asks for one search per trajectory, from many threads at once:
    the calls that arrive while one runs go out together, and each caller gets its own replies."""
    import threading
    import time

    class SlowActor(ScriptedActor):
        def generate(self, conversations, max_tokens, temperature):
            time.sleep(0.3)  # arrivals spread out on a loaded machine still meet a call in progress
            return super().generate(conversations, max_tokens, temperature)

    class SlowLLM(LocalChatLLM):
        actor_class = SlowActor

    llm = SlowLLM("unused", retry=RetryConfig(max_retries=0))
    backend = SimulatedSearch(llm, "sft", topk=2)
    backend.search([REQUESTS[0]])  # the actor is started and one call is counted
    before = ray_local.get(llm._get_actor().call_count.remote())
    requests = [SearchRequest(f"query {i}", f"Question {i}?", (str(i),)) for i in range(24)]
    results = searched_together(backend, requests)
    calls = ray_local.get(llm._get_actor().call_count.remote()) - before
    assert [r.documents for r in results] == [[f"Query: query {i}", "second"] for i in range(len(requests))]
    assert 1 <= calls <= 4
    assert backend.stats["requests"] == len(requests) + 1
    # once idle, no thread is left serving, and nothing keeps the model (and its actor) alive
    deadline = time.monotonic() + 10
    while any(t.name == "chat-batches" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "chat-batches" for t in threading.enumerate())
    import gc
    import weakref

    freed = weakref.ref(llm)
    gc.disable()
    try:
        del backend, llm
        assert freed() is None
    finally:
        gc.enable()
