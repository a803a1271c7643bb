"""The `wiki` backend: a client for a Search-R1-style retrieval server (``POST /retrieve``).

Works with ``scripts/retrieval_server.py`` and with Search-R1's own BM25/dense servers: the whole
batch goes in one request, and results with or without scores are understood.
"""

import httpx

from zerosearch.search.base import RetryConfig, SearchBackend, SearchRequest, SearchResult
from zerosearch.search.corpus import format_document


def parse_retrieve_response(payload, n_queries: int) -> list[list[str]]:
    """Formatted documents per query from ``{"result": [...]}``; each hit is either
    ``{"document": {...}, "score": x}`` or the document itself."""
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, list) or len(result) != n_queries:
        got = f"{len(result)} result lists" if isinstance(result, list) else "no 'result' list"
        raise ValueError(f"retrieval server answered {got} for {n_queries} queries")
    return [[format_document(_document(hit)) for hit in hits] for hits in result]


def _document(hit) -> dict:
    if not isinstance(hit, dict):
        raise ValueError(f"retrieval server sent a {type(hit).__name__} where a document was expected")
    return hit["document"] if "document" in hit else hit


class WikiSearch(SearchBackend):
    name = "wiki"

    def __init__(self, url: str, topk: int, retry: RetryConfig | None = None):
        super().__init__(topk, retry or RetryConfig())
        self.url = url
        # the server sits on the cluster network: proxies from the environment would only intercept it
        self._client = httpx.Client(timeout=self.retry.timeout_s, trust_env=False)

    def _post(self, queries: list[str]) -> list[list[str]]:
        response = self._client.post(self.url, json={"queries": queries, "topk": self.topk, "return_scores": True})
        response.raise_for_status()
        return [docs[: self.topk] for docs in parse_retrieve_response(response.json(), len(queries))]

    def _search_batch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        # The whole batch is one POST, retried as a whole.
        documents = self._retrying(
            lambda: self._post([r.query for r in requests]),
            f"a batch of {len(requests)} at {self.url}",
            self.retry.batch_deadline(),
        )
        if documents is None:
            return [SearchResult(failed=True) for _ in requests]
        return [SearchResult(documents=docs) for docs in documents]
