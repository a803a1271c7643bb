import logging

import pytest

from zerosearch.search.base import RetryConfig, SearchRequest
from zerosearch.search.google import GoogleSearch

SECRET = "0123456789abcdef-not-a-real-key"

ORGANIC = [
    {"position": 1, "title": "Everest - Wikipedia", "snippet": "Mount Everest is\nEarth's highest mountain."},
    {"position": 2, "title": "No snippet here"},
    {"position": 3, "title": "K2", "snippet": "K2 is the second-highest mountain."},
    {"position": 4, "title": "Lhotse", "snippet": "Lhotse is the fourth-highest mountain."},
]


class FakeClient:
    """Mimics serpapi.Client.search: a params dict in, SerpAPI's JSON (as a dict) out."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.calls = []

    def search(self, params):
        self.calls.append(dict(params))
        response = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(response, Exception):
            raise response
        return response


def backend_with(responses, topk=3, max_retries=0):
    client = FakeClient(responses)
    return GoogleSearch(topk, retry=RetryConfig(max_retries=max_retries, backoff_s=0.01), client=client), client


def test_organic_results_formatted_up_to_topk():
    backend, client = backend_with([{"search_metadata": {"status": "Success"}, "organic_results": ORGANIC}], topk=2)
    [result] = backend.search([SearchRequest(query="highest mountain")])
    assert result.documents == [
        "(Title: Everest - Wikipedia) Mount Everest is Earth's highest mountain.",
        "(Title: K2) K2 is the second-highest mountain.",
    ]
    assert client.calls == [{"engine": "google", "q": "highest mountain", "num": 2}]


def test_answer_box_then_knowledge_graph_come_first():
    answer_box = {"title": "Mount Everest height", "answer": "8,849 m"}
    graph = {"title": "Mount Everest", "description": "Highest mountain on Earth."}
    backend, _ = backend_with([{"answer_box": answer_box, "knowledge_graph": graph, "organic_results": ORGANIC}])
    [result] = backend.search([SearchRequest(query="everest height")])
    assert result.documents[0] == "(Title: Mount Everest height) 8,849 m"
    assert len(result.documents) == 3

    backend, _ = backend_with([{"knowledge_graph": graph, "organic_results": ORGANIC}], topk=2)
    [result] = backend.search([SearchRequest(query="everest")])
    assert result.documents == [
        "(Title: Mount Everest) Highest mountain on Earth.",
        "(Title: Everest - Wikipedia) Mount Everest is Earth's highest mountain.",
    ]


def test_no_results_is_empty_not_failed():
    response = {"search_metadata": {"status": "Success"}, "error": "Google hasn't returned any results for this query."}
    backend, _ = backend_with([response])
    [result] = backend.search([SearchRequest(query="zzqx")])
    assert result.documents == [] and not result.failed


def test_missing_key_names_the_variable_only(monkeypatch):
    monkeypatch.delenv("MY_SERP_KEY", raising=False)
    monkeypatch.setenv("SERPAPI_API_KEY", SECRET)  # another variable holds a key: it must not show up
    with pytest.raises(ValueError, match="MY_SERP_KEY") as info:
        GoogleSearch(3, api_key_env="MY_SERP_KEY")
    assert SECRET not in str(info.value)
    monkeypatch.setenv("MY_SERP_KEY", "")
    with pytest.raises(ValueError, match="MY_SERP_KEY"):
        GoogleSearch(3, api_key_env="MY_SERP_KEY")


def test_real_client_gets_key_and_timeout(monkeypatch):
    monkeypatch.setenv("MY_SERP_KEY", SECRET)
    backend = GoogleSearch(3, api_key_env="MY_SERP_KEY", retry=RetryConfig(timeout_s=7.5))
    assert backend._client.api_key == SECRET and backend._client.timeout == 7.5
    assert SECRET not in repr(backend) and SECRET not in repr(backend._client)


def test_failures_retried_then_counted_without_leaking_the_key(monkeypatch, caplog):
    monkeypatch.setenv("MY_SERP_KEY", SECRET)
    backend = GoogleSearch(3, api_key_env="MY_SERP_KEY", retry=RetryConfig(max_retries=2, backoff_s=0.01))
    error = RuntimeError(f"401 Client Error for url: https://serpapi.com/search?q=x&api_key={SECRET}&num=3")
    backend._client = FakeClient([error])
    with caplog.at_level(logging.DEBUG):
        results = backend.search([SearchRequest(query="x"), SearchRequest(query="y")])
    assert [r.failed for r in results] == [True, True]
    assert len(backend._client.calls) == 6  # 1 + 2 retries per query
    assert backend.stats["retries"] == 4 and backend.stats["failures"] == 2
    assert "401 Client Error" in caplog.text and SECRET not in caplog.text


def test_error_payload_is_a_failure_then_success_on_retry():
    error_payload = {"search_metadata": {"status": "Error"}, "error": "Invalid API key."}
    backend, client = backend_with([error_payload, {"organic_results": ORGANIC}], max_retries=1)
    [result] = backend.search([SearchRequest(query="everest")])
    assert not result.failed and result.documents[0].startswith("(Title: Everest - Wikipedia)")
    assert len(client.calls) == 2 and backend.stats["retries"] == 1
