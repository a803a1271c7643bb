"""Simulated search: an LLM writes the documents, useful or noisy as each request asks. The LLM is
reached through ``zerosearch.llm``: OpenAI-compatible servers (sglang, vLLM) or, for CPU machines
and tests, a transformers model on a Ray actor."""

from zerosearch.llm import ChatLLM, LocalChatLLM, ServerChatLLM
from zerosearch.prompts import parse_documents, simulator_messages
from zerosearch.search.base import SearchBackend, SearchRequest, SearchResult

STYLES = ("prompt", "sft")


def simulator_name(style: str) -> str:
    """Backend name for a prompt style; checked at construction so a typo fails before training."""
    if style not in STYLES:
        raise ValueError(f"simulator style must be one of {STYLES}, got {style!r}")
    return f"simulate_{style}"


def request_messages(request: SearchRequest, topk: int, style: str) -> list[dict[str, str]]:
    """The prompt of one request, built from that request's own question and answers only."""
    return simulator_messages(request.query, request.question, request.golden_answers, request.noisy, topk, style)


class SimulatedSearch(SearchBackend):
    """One conversation per request; a reply without documents is retried (on a server: with the
    next server) and, once the retries are spent, fails its request. Retries are counted in
    ``stats`` beside requests and failures."""

    def __init__(
        self,
        llm: ChatLLM | ServerChatLLM | LocalChatLLM,
        style: str,
        topk: int,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ):
        super().__init__(topk)
        self.name = simulator_name(style)
        self.llm, self.style = llm, style
        self.max_tokens, self.temperature = max_tokens, temperature
        self.stats = llm.stats  # the LLM counts retries; search() adds requests and failures

    def _search_batch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        replies = self.llm.complete(
            [request_messages(r, self.topk, self.style) for r in requests],
            self.max_tokens,
            self.temperature,
            accept=lambda text: bool(parse_documents(text, self.topk)),
        )
        return [
            SearchResult(failed=True) if reply is None else SearchResult(documents=parse_documents(reply, self.topk))
            for reply in replies
        ]
