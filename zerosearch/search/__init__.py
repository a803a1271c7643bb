"""Search backends by name, each wrapped in a result cache as configured."""

import os
from typing import TYPE_CHECKING

from zerosearch.search.base import NoSearch, RetryConfig, SearchBackend, SearchRequest, SearchResult
from zerosearch.search.cache import CachedSearch, SearchCache
from zerosearch.search.names import BACKENDS, CLOSED_BOOK, EVAL_ENGINES, REAL_ENGINES, SIMULATED_MODES

if TYPE_CHECKING:  # the config module lists this package's backends
    from zerosearch.config import SearchConfig


def build_backend(name: str, config: "SearchConfig") -> SearchBackend:
    """``config`` is a SearchConfig. Backends import their client libraries lazily."""
    backend: SearchBackend
    retry = config.retry
    if name in SIMULATED_MODES:
        from zerosearch.llm import build_chat_llm
        from zerosearch.search.simulate import SimulatedSearch

        sim = config.simulator
        llm = build_chat_llm(sim, sim.in_process, retry)
        style = "prompt" if name == "simulate_prompt" else "sft"
        backend = SimulatedSearch(llm, style, config.topk, max_tokens=sim.max_tokens, temperature=sim.temperature)
    elif name == "google":
        from zerosearch.search.google import GoogleSearch

        backend = GoogleSearch(config.topk, config.google_api_key_env, retry)
    elif name == "wiki":
        from zerosearch.search.wiki import WikiSearch

        backend = WikiSearch(config.retriever_url, config.topk, retry)
    elif name == "corpus":
        from zerosearch.search.corpus import CorpusSearch

        if not config.corpus_path:
            raise ValueError("search.corpus_path is not set: the `corpus` backend needs a JSONL corpus")
        backend = CorpusSearch(os.path.expanduser(config.corpus_path), config.topk, retry.without_deadlines())
    elif name == CLOSED_BOOK:
        return NoSearch(config.topk)
    else:
        raise ValueError(f"unknown search backend {name!r}; use one of {list(BACKENDS)}")
    return _with_cache(backend, config)


def _with_cache(backend: SearchBackend, config: "SearchConfig") -> SearchBackend:
    mode = config.cache
    if mode == "auto":
        mode = "disk" if backend.name == "google" else "memory"
    if mode == "none":
        return backend
    path = os.path.join(os.path.expanduser(config.cache_dir), f"{backend.name}.jsonl") if mode == "disk" else None
    return CachedSearch(backend, SearchCache(path))


__all__ = [
    "BACKENDS",
    "CLOSED_BOOK",
    "EVAL_ENGINES",
    "REAL_ENGINES",
    "SIMULATED_MODES",
    "RetryConfig",
    "SearchBackend",
    "SearchRequest",
    "SearchResult",
    "build_backend",
]
