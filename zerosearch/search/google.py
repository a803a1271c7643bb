"""The `google` backend: real web search through SerpAPI, one request per query.

The API key comes from an environment variable and is never logged: SerpAPI's client puts it in
the request URL, which its errors quote, so errors are re-raised with the key scrubbed out.
"""

import os

from zerosearch.retry import redact
from zerosearch.search.base import RetryConfig, SearchBackend, SearchRequest

# ZeroSearch's scripts read the key from this variable; it is accepted when the configured one is unset.
ZEROSEARCH_KEY_ENV = "SER_API_KEY"


def serpapi_key(api_key_env: str) -> str:
    """The SerpAPI key from ``$api_key_env``, else from ``$SER_API_KEY``; "" when neither is set."""
    return os.environ.get(api_key_env) or os.environ.get(ZEROSEARCH_KEY_ENV, "")


def _document(title: str, text: str) -> str:
    return f"(Title: {' '.join(title.split())}) {' '.join(text.split())}"


def _featured(results: dict) -> str | None:
    """The answer box, or else the knowledge graph, as one document."""
    box = results.get("answer_box")
    if isinstance(box, dict):
        text = box.get("answer") or box.get("snippet") or box.get("result")
        if isinstance(text, str) and text.strip():
            return _document(str(box.get("title", "")), text)
    graph = results.get("knowledge_graph")
    if isinstance(graph, dict) and isinstance(graph.get("description"), str):
        return _document(str(graph.get("title", "")), graph["description"])
    return None


def format_results(results: dict, topk: int) -> list[str]:
    """The featured snippet first (when present), then organic results with a snippet; topk in all."""
    featured = _featured(results)
    documents = [featured] if featured else []
    for item in results.get("organic_results") or []:
        if isinstance(item, dict) and isinstance(item.get("snippet"), str):
            documents.append(_document(str(item.get("title", "")), item["snippet"]))
    return documents[:topk]


class GoogleSearch(SearchBackend):
    name = "google"

    def __init__(
        self,
        topk: int,
        api_key_env: str = "SERPAPI_API_KEY",
        retry: RetryConfig | None = None,
        client=None,
    ):
        """``client``: anything with SerpAPI's ``search(params) -> dict``; by default a ``serpapi.Client``."""
        super().__init__(topk, retry or RetryConfig())
        self._secret = ""
        if client is None:
            self._secret = serpapi_key(api_key_env)
            if not self._secret:
                raise ValueError(
                    f"the `google` search backend needs a SerpAPI key in the environment variable "
                    f"{api_key_env} (or {ZEROSEARCH_KEY_ENV}), which is unset or empty"
                )
            try:
                import serpapi
            except ImportError:
                raise ImportError(
                    "the `google` search backend needs the serpapi package: pip install criticsearch[search]"
                ) from None
            client = serpapi.Client(api_key=self._secret, timeout=self.retry.timeout_s)
        self._client = client

    def _search_one(self, request: SearchRequest) -> list[str]:
        try:
            results = dict(self._client.search({"engine": "google", "q": request.query, "num": self.topk}))
        except Exception as e:
            # `from None`: the original exception (and its URL) must not travel up a traceback either
            raise RuntimeError(f"SerpAPI request failed: {type(e).__name__}: {redact(str(e), self._secret)}") from None
        # SerpAPI reports "no results" as an error with status Success: that is an empty answer, not a failure
        status = (results.get("search_metadata") or {}).get("status")
        if results.get("error") and status != "Success":
            raise RuntimeError(f"SerpAPI error: {redact(str(results['error']), self._secret)}")
        return format_results(results, self.topk)
