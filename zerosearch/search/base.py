"""The one interface every search backend offers: a batch of requests in, documents out.

Each request carries its own query, question and gold answers (a simulator writing useful
documents needs the question and answer of *that* row). A backend never raises for one failed
request: after bounded retries with backoff the request yields no documents and is counted.
"""

import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from zerosearch.retry import RetryConfig, retrying, within


@dataclass(frozen=True)
class SearchRequest:
    query: str
    question: str = ""
    golden_answers: tuple[str, ...] = ()
    noisy: bool = False  # simulators only: write noisy documents (drawn by the curriculum)


@dataclass
class SearchResult:
    documents: list[str] = field(default_factory=list)  # at most topk, best first
    failed: bool = False  # True when every attempt failed; documents is then empty


class SearchBackend:
    """Subclasses implement ``_search_one`` (may raise), to which ``search`` adds bounded
    concurrency, retries with exponential backoff, the retry policy's deadlines and failure
    accounting; backends with a native batch API implement ``_search_batch`` instead, using
    ``_retrying`` for the same policy."""

    name = "base"

    def __init__(self, topk: int, retry: RetryConfig | None = None):
        self.topk = topk
        self.retry = retry or RetryConfig().without_deadlines()
        self.stats: Counter = Counter()  # requests, failures, retries
        self._stats_lock = threading.Lock()  # retries are counted from worker threads

    def _search_one(self, request: SearchRequest) -> list[str]:
        """Documents for one request; raise on any failure (it is retried)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _search_one nor _search_batch")

    def _retrying(self, attempt, what: str, deadline: float = math.inf):
        """``attempt()``'s value under the retry policy, each attempt within its deadline and none
        past the batch's, or None once the policy is spent (counted by ``search``)."""

        def bounded():
            return within(attempt, self.retry.attempt_seconds(deadline))

        return retrying(bounded, self.retry, self.stats, self._stats_lock, f"{self.name} search for {what}", deadline)

    def _with_retries(self, request: SearchRequest, deadline: float) -> SearchResult:
        documents = self._retrying(lambda: list(self._search_one(request))[: self.topk], repr(request.query), deadline)
        return SearchResult(failed=True) if documents is None else SearchResult(documents=documents)

    def _search_batch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        deadline = self.retry.batch_deadline()
        with ThreadPoolExecutor(max_workers=max(1, min(self.retry.concurrency, len(requests)))) as pool:
            return list(pool.map(lambda request: self._with_retries(request, deadline), requests))

    def search(self, requests: list[SearchRequest]) -> list[SearchResult]:
        """Results in request order; an empty batch costs nothing."""
        if not requests:
            return []
        results = self._search_batch(list(requests))
        with self._stats_lock:  # an asynchronous rollout searches from many threads at once
            self.stats["requests"] += len(requests)
            self.stats["failures"] += sum(r.failed for r in results)
        return results


class NoSearch(SearchBackend):
    """Closed book: every search returns no documents, so an evaluation shows what the policy
    answers from memory alone, beside what it answers by reading."""

    name = "none"

    def _search_one(self, request: SearchRequest) -> list[str]:
        return []
