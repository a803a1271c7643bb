import importlib.util
import json
import os
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import uvicorn

from tests.conftest import REPO_ROOT
from tests.loopback import LoopbackServer, read_body, respond
from zerosearch.search.base import RetryConfig, SearchRequest
from zerosearch.search.corpus import BM25Index
from zerosearch.search.wiki import WikiSearch, parse_retrieve_response

SERVER_SCRIPT = os.path.join(REPO_ROOT, "scripts", "retrieval_server.py")
DOCS = [
    {"id": "0", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "1", "title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"id": "2", "title": "Mount Everest", "text": "Mount Everest is Earth's highest mountain."},
    {"id": "3", "title": "Nile", "text": "The Nile river flows north through Egypt."},
]


def load_server_module():
    spec = importlib.util.spec_from_file_location("retrieval_server", SERVER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def server_url():
    app = load_server_module().create_app(BM25Index(DOCS), default_topk=3)
    sock = bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "retrieval server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/retrieve"
    server.should_exit = True
    thread.join(timeout=10)


@contextmanager
def failing_server(status: int):
    """Answers every POST with ``status`` and counts the attempts."""
    hits = []

    def fail(handler):
        hits.append(read_body(handler))
        respond(handler, status)

    with LoopbackServer(fail) as server:
        yield f"{server.url}/retrieve", hits


def requests_for(*queries):
    return [SearchRequest(query=q) for q in queries]


def test_server_response_shapes(server_url):
    import httpx

    with httpx.Client(trust_env=False) as client:
        scored = client.post(
            server_url, json={"queries": ["capital of Germany"], "topk": 1, "return_scores": True}
        ).json()
        plain = client.post(server_url, json={"queries": ["highest mountain", ""]}).json()
    [[hit]] = scored["result"]
    assert hit["document"] == {"id": "1", "contents": "Berlin\nBerlin is the capital of Germany."}
    assert isinstance(hit["score"], float) and hit["score"] > 0
    assert plain["result"][0][0] == {"id": "2", "contents": "Mount Everest\nMount Everest is Earth's highest mountain."}
    assert plain["result"][1] == []


def test_wiki_search_returns_documents_in_order(server_url):
    backend = WikiSearch(server_url, topk=2, retry=RetryConfig(timeout_s=10, max_retries=0))
    results = backend.search(requests_for("Nile Egypt", "capital of France", "zzqx"))
    assert [r.documents[:1] for r in results] == [
        ["(Title: Nile) The Nile river flows north through Egypt."],
        ["(Title: Paris) Paris is the capital and largest city of France."],
        [],
    ]
    assert len(results[1].documents) == 2  # Berlin is also a capital
    assert not any(r.failed for r in results) and backend.stats["failures"] == 0


def test_server_error_is_retried_then_the_batch_fails(server_url):
    with failing_server(500) as (url, hits):
        backend = WikiSearch(url, topk=3, retry=RetryConfig(timeout_s=5, max_retries=2, backoff_s=0.01))
        started = time.monotonic()
        results = backend.search(requests_for("a", "b", "c"))
    assert time.monotonic() - started < 5
    assert [r.failed for r in results] == [True, True, True] and all(r.documents == [] for r in results)
    assert len(hits) == 3  # one POST per attempt, each carrying the whole batch
    assert json.loads(hits[0]) == {"queries": ["a", "b", "c"], "topk": 3, "return_scores": True}
    assert backend.stats["retries"] == 2 and backend.stats["failures"] == 3 and backend.stats["requests"] == 3


def test_closed_port_fails_quickly():
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()  # bound then closed: nothing listens there
    backend = WikiSearch(
        f"http://127.0.0.1:{port}/retrieve", topk=3, retry=RetryConfig(timeout_s=5, max_retries=3, backoff_s=0.01)
    )
    started = time.monotonic()
    results = backend.search(requests_for("a", "b"))
    assert time.monotonic() - started < 5
    assert all(r.failed for r in results)
    assert backend.stats["retries"] == 3 and backend.stats["failures"] == 2


def test_both_search_r1_result_shapes_are_parsed():
    contents = {"id": "7", "contents": '"Aaron"\nAaron is a prophet.'}
    with_scores = {"result": [[{"document": contents, "score": 3.5}], []]}
    without_scores = {"result": [[contents], []]}
    expected = [['(Title: "Aaron") Aaron is a prophet.'], []]
    assert parse_retrieve_response(with_scores, 2) == expected
    assert parse_retrieve_response(without_scores, 2) == expected
    assert parse_retrieve_response({"result": [[{"title": "T", "text": "x"}]]}, 1) == [["(Title: T) x"]]
    with pytest.raises(ValueError, match="1 result lists for 2 queries"):
        parse_retrieve_response({"result": [[]]}, 2)
    with pytest.raises(ValueError, match="no 'result' list"):
        parse_retrieve_response({"error": "boom"}, 1)
