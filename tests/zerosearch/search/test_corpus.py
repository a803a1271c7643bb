import json

import pytest

from zerosearch.search.base import RetryConfig, SearchRequest
from zerosearch.search.corpus import BM25Index, CorpusSearch, format_document, load_corpus

DOCS = [
    {"id": "paris", "contents": "Paris\nParis is the capital and largest city of France."},
    {"id": "berlin", "contents": "Berlin\nBerlin is the capital of Germany, on the river Spree."},
    {"id": "everest", "title": "Mount Everest", "text": "Mount Everest is Earth's highest mountain above sea level."},
    {"id": "amazon", "title": "Amazon River", "text": "The Amazon is the largest river by discharge volume."},
    {"contents": "Nile\nThe Nile is a major river flowing north through Egypt."},
]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def corpus_path(tmp_path):
    return write_jsonl(tmp_path / "corpus.jsonl", DOCS)


def test_load_corpus_both_layouts_and_default_ids(corpus_path):
    docs = load_corpus(corpus_path)
    assert [d["id"] for d in docs] == ["paris", "berlin", "everest", "amazon", "5"]
    assert docs[0] == {"id": "paris", "title": "Paris", "text": "Paris is the capital and largest city of France."}
    assert docs[2]["title"] == "Mount Everest"


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"contents": "ok"', "invalid JSON"),
        ('{"title": "no text"}', "'contents'"),
        ('["a list"]', "JSON object"),
    ],
)
def test_load_corpus_errors_name_file_and_line(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [DOCS[0], "", bad])
    with pytest.raises(ValueError, match=message) as info:
        load_corpus(path)
    assert f"{path}:3" in str(info.value)


def test_load_corpus_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_corpus(str(tmp_path / "nowhere.jsonl"))
    with pytest.raises(ValueError, match="no documents"):
        load_corpus(write_jsonl(tmp_path / "empty.jsonl", [""]))


def test_format_document_one_line():
    assert format_document({"contents": "Paris\nParis is\nthe capital."}) == "(Title: Paris) Paris is the capital."
    assert format_document({"title": "Nile", "text": "A  river."}) == "(Title: Nile) A river."
    with pytest.raises(ValueError, match="neither"):
        format_document({"id": "x"})


def test_bm25_ranks_the_right_document_first(corpus_path):
    index = BM25Index.from_jsonl(corpus_path)
    hits = index.search(["capital of Germany", "highest mountain", "river through Egypt"], topk=2)
    assert [row[0][0]["id"] for row in hits] == ["berlin", "everest", "5"]
    for row in hits:
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_bm25_empty_and_unmatched_queries_have_no_results(corpus_path):
    index = BM25Index.from_jsonl(corpus_path)
    assert index.search(["", "the of and", "zzqx", "Paris"], topk=10)[:3] == [[], [], []]
    assert len(index.search(["capital"], topk=10)[0]) == 2  # topk beyond the matches is fine


def test_save_load_round_trip(corpus_path, tmp_path):
    index = BM25Index.from_jsonl(corpus_path)
    index.save(str(tmp_path / "index"))
    loaded = BM25Index.load(str(tmp_path / "index"))
    assert loaded.documents == index.documents
    queries = ["largest river", "capital city of France"]
    assert loaded.search(queries, 3) == index.search(queries, 3)
    with pytest.raises(FileNotFoundError, match="no saved BM25 index"):
        BM25Index.load(str(tmp_path))


def test_corpus_search_batch_keeps_request_order(corpus_path, tmp_path):
    queries = ["Nile Egypt", "", "Everest mountain", "Paris France", "Amazon discharge"]
    backend = CorpusSearch(corpus_path, topk=1, retry=RetryConfig(max_retries=0))
    results = backend.search([SearchRequest(query=q) for q in queries])
    assert [r.documents for r in results] == [
        ["(Title: Nile) The Nile is a major river flowing north through Egypt."],
        [],
        ["(Title: Mount Everest) Mount Everest is Earth's highest mountain above sea level."],
        ["(Title: Paris) Paris is the capital and largest city of France."],
        ["(Title: Amazon River) The Amazon is the largest river by discharge volume."],
    ]
    assert not any(r.failed for r in results)
    assert backend.stats["requests"] == 5 and backend.stats["failures"] == 0

    backend.index.save(str(tmp_path / "saved"))
    from_dir = CorpusSearch(str(tmp_path / "saved"), topk=1)
    assert [r.documents for r in from_dir.search([SearchRequest(query=q) for q in queries])] == [
        r.documents for r in results
    ]
