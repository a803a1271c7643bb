"""A search result cache, in memory and optionally on disk as JSONL, and a backend wrapper that
answers repeated requests from it."""

import json
import logging
import os
import threading
from typing import cast

from zerosearch.search.base import SearchBackend, SearchRequest, SearchResult

logger = logging.getLogger(__name__)

# (backend name, query, topk, noisy, question, golden answers): a simulator's documents depend on all.
CacheKey = tuple[str, str, int, bool, str, tuple[str, ...]]
# Real engines see only the query: the same query under another question is the same search.
QUERY_ONLY_BACKENDS = ("google", "wiki", "corpus")


def cache_key(backend_name: str, request: SearchRequest, topk: int) -> CacheKey:
    if backend_name in QUERY_ONLY_BACKENDS:
        return (backend_name, request.query, topk, False, "", ())
    return (
        backend_name,
        request.query,
        topk,
        request.noisy,
        request.question,
        tuple(str(a) for a in request.golden_answers),
    )


def _record(key: CacheKey, documents: list[str]) -> dict:
    name, query, topk, noisy, question, answers = key
    return {
        "backend": name,
        "query": query,
        "topk": topk,
        "noisy": noisy,
        "question": question,
        "golden_answers": list(answers),
        "documents": documents,
    }


def _parse_record(record) -> tuple[CacheKey, list[str]]:
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    fields = {
        "backend": str,
        "query": str,
        "topk": int,
        "noisy": bool,
        "question": str,
        "golden_answers": list,
        "documents": list,
    }
    for name, kind in fields.items():
        if not isinstance(record.get(name), kind):
            raise ValueError(f"field {name!r} missing or not a {kind.__name__}")
    if not all(isinstance(x, str) for x in record["golden_answers"] + record["documents"]):
        raise ValueError("golden_answers and documents must be lists of strings")
    key = (
        record["backend"],
        record["query"],
        record["topk"],
        record["noisy"],
        record["question"],
        tuple(record["golden_answers"]),
    )
    return key, record["documents"]


class SearchCache:
    """Thread-safe. With a path, every new entry is appended as one JSON line and the file is
    read back at start; unreadable lines (a crash mid-write, hand edits) are skipped with a warning."""

    def __init__(self, path: str | None = None):
        self.path = os.path.expanduser(path) if path else None
        self._entries: dict[CacheKey, list[str]] = {}
        self._lock = threading.Lock()
        self._needs_newline = False  # the file ends in a partial line: start the next write on a new one
        if self.path and os.path.exists(self.path):
            self._load(self.path)

    def _load(self, path: str) -> None:
        skipped = 0
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                self._needs_newline = not line.endswith(b"\n")
                if not line.strip():
                    continue
                try:
                    key, documents = _parse_record(json.loads(line))
                except ValueError as e:  # also covers bad JSON and bad UTF-8
                    logger.warning("search cache %s line %d skipped: %s", self.path, lineno, e)
                    skipped += 1
                    continue
                self._entries[key] = documents
        logger.info("search cache %s: %d entries loaded, %d lines skipped", self.path, len(self._entries), skipped)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> list[str] | None:
        with self._lock:
            documents = self._entries.get(key)
        return None if documents is None else list(documents)

    def put(self, entries: list[tuple[CacheKey, list[str]]]) -> None:
        with self._lock:
            new = [(key, list(docs)) for key, docs in entries if key not in self._entries]
            self._entries.update(new)
            if self.path and new:
                self._append(self.path, new)

    def _append(self, path: str, entries: list[tuple[CacheKey, list[str]]]) -> None:
        lines = "".join(json.dumps(_record(key, docs), ensure_ascii=False) + "\n" for key, docs in entries)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(("\n" if self._needs_newline else "") + lines)
            self._needs_newline = False
        except OSError as e:  # a full or read-only disk costs persistence, not the run
            logger.warning("search cache %s: could not append %d entries: %s", self.path, len(entries), e)
            self._needs_newline = True


class CachedSearch(SearchBackend):
    """Answers hits from the cache and sends the distinct misses to the wrapped backend in one
    batch; only successful results are stored. Shares the wrapped backend's stats counter, adding
    ``cache_hits`` (requests answered without calling the backend)."""

    def __init__(self, backend: SearchBackend, cache: SearchCache):
        super().__init__(backend.topk, backend.retry)
        self.backend, self.cache = backend, cache
        self.name = backend.name
        self.stats = backend.stats

    def _search_batch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        results: list[SearchResult | None] = [None] * len(requests)
        misses: dict[CacheKey, list[int]] = {}  # identical requests in a batch cost one search
        for i, request in enumerate(requests):
            key = cache_key(self.name, request, self.topk)
            documents = self.cache.get(key)
            if documents is None:
                misses.setdefault(key, []).append(i)
            else:
                results[i] = SearchResult(documents=documents)
        with self._stats_lock:
            self.stats["cache_hits"] += len(requests) - len(misses)
        if misses:
            fresh = self.backend._search_batch([requests[rows[0]] for rows in misses.values()])
            self.cache.put([(key, r.documents) for key, r in zip(misses, fresh, strict=True) if not r.failed])
            for rows, result in zip(misses.values(), fresh, strict=True):
                for i in rows:
                    results[i] = SearchResult(documents=list(result.documents), failed=result.failed)
        return cast(list[SearchResult], results)  # every row is filled: by a hit or by its miss's search
