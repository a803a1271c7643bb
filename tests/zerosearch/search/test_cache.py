"""SearchCache and CachedSearch: hits, persistence, corrupt files, failures kept out."""

import json
import logging

from zerosearch.search.base import RetryConfig, SearchBackend, SearchRequest
from zerosearch.search.cache import CachedSearch, SearchCache, cache_key


class CountingBackend(SearchBackend):
    """Documents quote the request; a query starting with "fail" always raises."""

    name = "counting"

    def __init__(self, topk: int = 2):
        super().__init__(topk, RetryConfig(concurrency=2, max_retries=1, backoff_s=0.0))
        self.queries: list[str] = []

    def _search_one(self, request):
        self.queries.append(request.query)
        if request.query.startswith("fail"):
            raise RuntimeError("backend down")
        return [f"{request.query} / {request.question} / noisy={request.noisy}", "second", "third"]


def test_hits_misses_and_duplicates_in_a_batch():
    backend = CountingBackend()
    cached = CachedSearch(backend, SearchCache())
    assert cached.name == "counting" and cached.topk == 2

    first = cached.search([SearchRequest("a", "qa"), SearchRequest("b", "qb"), SearchRequest("a", "qa")])
    assert [r.documents[0] for r in first] == ["a / qa / noisy=False", "b / qb / noisy=False", "a / qa / noisy=False"]
    assert sorted(backend.queries) == ["a", "b"]
    first[0].documents.append("caller's own edit")  # must not reach the cache

    second = cached.search([SearchRequest("b", "qb"), SearchRequest("c", "qc"), SearchRequest("a", "qa")])
    assert [r.documents for r in second] == [
        ["b / qb / noisy=False", "second"],
        ["c / qc / noisy=False", "second"],
        ["a / qa / noisy=False", "second"],
    ]
    assert sorted(backend.queries) == ["a", "b", "c"]
    assert (cached.stats["requests"], cached.stats["cache_hits"], cached.stats["failures"]) == (6, 3, 0)
    assert backend.stats is cached.stats


def test_key_holds_everything_the_documents_depend_on():
    backend = CountingBackend()
    cached = CachedSearch(backend, SearchCache())
    variants = [
        SearchRequest("q"),
        SearchRequest("q", noisy=True),
        SearchRequest("q", "other question"),
        SearchRequest("q", golden_answers=("x",)),
        SearchRequest("q", golden_answers=("y",)),
    ]

    cached.search(variants)
    cached.search(variants)

    assert len(backend.queries) == len(variants)
    assert cached.stats["cache_hits"] == len(variants)
    assert cache_key("a", SearchRequest("q"), 2) != cache_key("b", SearchRequest("q"), 2)
    assert cache_key("a", SearchRequest("q"), 2) != cache_key("a", SearchRequest("q"), 3)


def test_persisted_across_instances(tmp_path):
    path = tmp_path / "sub" / "cache.jsonl"
    requests = [SearchRequest("a", "qa", ("ans",)), SearchRequest("b", "qb", noisy=True)]
    first = CachedSearch(CountingBackend(), SearchCache(str(path))).search(requests)

    backend = CountingBackend()
    second = CachedSearch(backend, SearchCache(str(path))).search(requests)

    assert backend.queries == []
    assert [r.documents for r in second] == [r.documents for r in first]
    assert len(path.read_text().splitlines()) == 2


def test_corrupt_lines_are_skipped(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    good = {
        "backend": "counting",
        "query": "a",
        "topk": 2,
        "noisy": False,
        "question": "",
        "golden_answers": [],
        "documents": ["doc a"],
    }
    wrong_type = dict(good, query="b", documents="not a list")
    path.write_bytes(
        b"\n".join(
            [
                json.dumps(good).encode(),
                b"{not json",
                b"\xff\xfe",
                json.dumps(wrong_type).encode(),
                b"[1, 2]",
                b'{"backend": "count',
            ]
        )
    )

    with caplog.at_level(logging.WARNING):
        cache = SearchCache(str(path))
    assert len(cache) == 1
    assert cache.get(cache_key("counting", SearchRequest("a"), 2)) == ["doc a"]
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 5

    # A write after a partial last line starts on a line of its own, so it survives a reload.
    backend = CountingBackend()
    CachedSearch(backend, cache).search([SearchRequest("a"), SearchRequest("new")])
    assert backend.queries == ["new"]
    reloaded = SearchCache(str(path))
    assert len(reloaded) == 2
    assert reloaded.get(cache_key("counting", SearchRequest("new"), 2)) == ["new /  / noisy=False", "second"]


def test_failed_results_are_not_cached(tmp_path):
    path = tmp_path / "cache.jsonl"
    backend = CountingBackend()
    cached = CachedSearch(backend, SearchCache(str(path)))

    for _ in range(2):
        results = cached.search([SearchRequest("fail once more"), SearchRequest("fine")])
        assert results[0].failed and results[0].documents == []
        assert results[1].documents == ["fine /  / noisy=False", "second"]

    assert backend.queries.count("fail once more") == 4  # two searches, each retried once
    assert backend.queries.count("fine") == 1
    assert (cached.stats["failures"], cached.stats["retries"], cached.stats["cache_hits"]) == (2, 2, 1)
    assert len(path.read_text().splitlines()) == 1
