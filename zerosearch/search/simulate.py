"""Simulated search: an LLM served behind OpenAI-compatible chat completions (sglang / vLLM)
writes the documents, useful or noisy as each request asks."""

import threading
import typing

import openai
from openai.types.chat import ChatCompletionMessageParam

from zerosearch.prompts import parse_documents, simulator_messages
from zerosearch.search.base import RetryPolicy, SearchBackend, SearchRequest

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
    """Each attempt, retries included, goes to the next server in rotation, so a dead server
    costs one attempt rather than every retry of a request."""

    def __init__(
        self,
        server_urls: list[str],
        model: str,
        style: str,
        topk: int,
        api_key: str = "EMPTY",
        max_tokens: int = 256,
        temperature: float = 0.0,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ):
        if not server_urls:
            raise ValueError("SimulatedSearch needs at least one server URL (search.simulator.server_urls)")
        super().__init__(topk, retry)
        self.name = simulator_name(style)
        self.style, self.model = style, model
        self.max_tokens, self.temperature = max_tokens, temperature
        # The client's own retries are off: RetryPolicy alone bounds the attempts.
        self._clients = [
            openai.OpenAI(base_url=url, api_key=api_key, timeout=timeout_s, max_retries=0) for url in server_urls
        ]
        self._turn = 0
        self._turn_lock = threading.Lock()

    def _next_client(self) -> openai.OpenAI:
        with self._turn_lock:
            client = self._clients[self._turn % len(self._clients)]
            self._turn += 1
        return client

    def _search_one(self, request: SearchRequest) -> list[str]:
        client = self._next_client()
        reply = client.chat.completions.create(
            model=self.model,
            messages=typing.cast("list[ChatCompletionMessageParam]", request_messages(request, self.topk, self.style)),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        text = (reply.choices[0].message.content or "") if reply.choices else ""
        documents = parse_documents(text, self.topk)
        if not documents:
            raise ValueError(f"simulator at {client.base_url} replied without documents: {text[:200]!r}")
        return documents
