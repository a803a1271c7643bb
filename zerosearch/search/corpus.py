"""A local JSONL corpus, its BM25 index, and the `corpus` backend that searches it in-process.

Corpus layout (Search-R1/FlashRAG): one JSON object per line, either ``contents`` whose first line
is the title and the rest the text, or ``title`` + ``text``; ``id`` is optional.
"""

import json
import logging
import os

import bm25s

from zerosearch.search.base import RetryConfig, SearchBackend, SearchRequest, SearchResult

logger = logging.getLogger(__name__)

_STOPWORDS = "en"
_DOCUMENTS_FILE = "documents.jsonl"
_META_FILE = "criticsearch_index.json"


def _parse_document(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if isinstance(record.get("contents"), str):
        title, _, text = record["contents"].partition("\n")
    elif isinstance(record.get("title"), str) and isinstance(record.get("text"), str):
        title, text = record["title"], record["text"]
    else:
        raise ValueError(f"{where}: needs a string 'contents', or string 'title' and 'text'")
    return {"id": record.get("id"), "title": title, "text": text}


def load_corpus(path: str) -> list[dict]:
    """Documents as ``{"id", "title", "text"}``; ids default to the 1-based line number, as strings.
    Blank lines are skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    documents = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 (byte {e.start} of the line); re-encode the corpus") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
            doc = _parse_document(record, where)
            doc["id"] = str(lineno if doc["id"] is None else doc["id"])
            documents.append(doc)
    if not documents:
        raise ValueError(f"{path}: the corpus holds no documents")
    return documents


def format_document(doc: dict) -> str:
    """``(Title: …) text`` on one line, from either corpus layout (server responses use ``contents``)."""
    title, text = (doc["title"], doc["text"]) if "title" in doc and "text" in doc else _split_contents(doc)
    return f"(Title: {' '.join(title.split())}) {' '.join(text.split())}"


def _split_contents(doc: dict) -> tuple[str, str]:
    if not isinstance(doc.get("contents"), str):
        raise ValueError(f"document has neither 'contents' nor 'title' + 'text': keys {sorted(doc)}")
    title, _, text = doc["contents"].partition("\n")
    return title, text


def _english_stemmer():
    """PyStemmer when installed (it needs no download); otherwise tokens are not stemmed."""
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("english")


class BM25Index:
    """BM25 (bm25s, Lucene scoring) over title + text, English stopwords removed."""

    def __init__(self, documents: list[dict]):
        if not documents:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        self.documents = documents
        self._stemmer = _english_stemmer()
        tokens = bm25s.tokenize(
            [f"{d['title']}\n{d['text']}" for d in documents],
            stopwords=_STOPWORDS,
            stemmer=self._stemmer,
            show_progress=False,
        )
        self._bm25 = bm25s.BM25()
        self._bm25.index(tokens, show_progress=False)

    @classmethod
    def from_jsonl(cls, path: str) -> "BM25Index":
        return cls(load_corpus(path))

    def search(self, queries: list[str], topk: int) -> list[list[tuple[dict, float]]]:
        """(document, score) pairs per query, best first; documents sharing no term are left out,
        so an empty query (or one of stopwords only) has no results."""
        results: list[list[tuple[dict, float]]] = [[] for _ in queries]
        tokens = bm25s.tokenize(
            list(queries), stopwords=_STOPWORDS, stemmer=self._stemmer, return_ids=False, show_progress=False
        )
        # bm25s cannot score an empty token list, so those queries are never sent to it
        rows = [i for i, t in enumerate(tokens) if t]
        if not rows or topk <= 0:
            return results
        k = min(topk, len(self.documents))
        ids, scores = self._bm25.retrieve([tokens[i] for i in rows], k=k, show_progress=False)
        for row, row_ids, row_scores in zip(rows, ids, scores, strict=True):
            results[row] = [
                (self.documents[int(j)], float(s)) for j, s in zip(row_ids, row_scores, strict=True) if s > 0
            ]
        return results

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self._bm25.save(directory, show_progress=False)
        with open(os.path.join(directory, _DOCUMENTS_FILE), "w", encoding="utf-8") as f:
            for doc in self.documents:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
        with open(os.path.join(directory, _META_FILE), "w", encoding="utf-8") as f:
            json.dump({"stemmer": "english" if self._stemmer else None, "stopwords": _STOPWORDS}, f)

    @classmethod
    def load(cls, directory: str) -> "BM25Index":
        meta_path = os.path.join(directory, _META_FILE)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"no saved BM25 index in {directory} (missing {_META_FILE})")
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        index = cls.__new__(cls)
        index._stemmer = _english_stemmer()
        # queries must be tokenized exactly as the documents were, or terms silently stop matching
        if meta.get("stemmer") != ("english" if index._stemmer else None):
            raise RuntimeError(
                f"{meta_path}: index built with stemmer={meta.get('stemmer')!r}, but "
                f"PyStemmer is {'installed' if index._stemmer else 'missing'} here; rebuild the index"
            )
        index.documents = load_corpus(os.path.join(directory, _DOCUMENTS_FILE))
        index._bm25 = bm25s.BM25.load(directory, show_progress=False)
        return index


def is_saved_index(path: str) -> bool:
    return os.path.isfile(os.path.join(path, _META_FILE))


class CorpusSearch(SearchBackend):
    """The offline default: BM25 over a local corpus, no server. ``corpus_path_or_index`` is a JSONL
    corpus, a directory written by ``BM25Index.save``, or a built ``BM25Index``."""

    name = "corpus"

    def __init__(self, corpus_path_or_index, topk: int, retry: RetryConfig | None = None):
        super().__init__(topk, retry)
        if isinstance(corpus_path_or_index, BM25Index):
            self.index = corpus_path_or_index
        elif os.path.isdir(corpus_path_or_index):
            self.index = BM25Index.load(corpus_path_or_index)
        else:
            self.index = BM25Index.from_jsonl(corpus_path_or_index)

    def _search_one(self, request: SearchRequest) -> list[str]:
        return [format_document(d) for d, _ in self.index.search([request.query], self.topk)[0]]

    def _search_batch(self, requests: list[SearchRequest]) -> list[SearchResult]:
        try:
            hits = self.index.search([r.query for r in requests], self.topk)
        except Exception as e:  # isolate the offending query: fall back to one search per request
            logger.warning("corpus batch search failed (%s); searching one query at a time", e)
            return super()._search_batch(requests)
        return [SearchResult(documents=[format_document(d) for d, _ in row]) for row in hits]
