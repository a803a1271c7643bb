"""A BM25 retrieval server speaking Search-R1's batch API, for the `wiki` search backend.

    python scripts/retrieval_server.py --corpus corpus.jsonl [--index-dir DIR] [--port 8000]

POST /retrieve {"queries": [...], "topk": 3, "return_scores": true}
  -> {"result": [[{"document": {"id": ..., "contents": "Title\\ntext"}, "score": 1.2}, ...], ...]}
With "return_scores": false each query gets a plain list of documents.
With --index-dir, a saved index there is loaded; otherwise the index is built and saved there.
"""

import argparse
import logging

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

from zerosearch.search.corpus import BM25Index, is_saved_index

logger = logging.getLogger("retrieval_server")


class RetrieveRequest(BaseModel):
    queries: list[str]
    topk: int | None = Field(default=None, ge=1)
    return_scores: bool = False


def _as_served(doc: dict) -> dict:
    # Search-R1 clients read the title from the first line of "contents"
    return {"id": doc["id"], "contents": f"{doc['title']}\n{doc['text']}"}


def create_app(index: BM25Index, default_topk: int) -> FastAPI:
    app = FastAPI(title="BM25 retrieval server")

    @app.post("/retrieve")
    def retrieve(request: RetrieveRequest) -> dict:
        hits = index.search(request.queries, request.topk or default_topk)
        if request.return_scores:
            return {"result": [[{"document": _as_served(d), "score": s} for d, s in row] for row in hits]}
        return {"result": [[_as_served(d) for d, _ in row] for row in hits]}

    return app


def _load_index(corpus: str | None, index_dir: str | None) -> BM25Index:
    if index_dir and is_saved_index(index_dir):
        logger.info("loading the BM25 index from %s", index_dir)
        return BM25Index.load(index_dir)
    if not corpus:
        raise SystemExit(f"--corpus is required: no saved index in {index_dir or '(no --index-dir given)'}")
    logger.info("building the BM25 index over %s", corpus)
    index = BM25Index.from_jsonl(corpus)
    if index_dir:
        index.save(index_dir)
        logger.info("saved the index to %s", index_dir)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", help="JSONL corpus: 'contents' (title on the first line) or 'title' + 'text'")
    parser.add_argument("--index-dir", help="load a saved index from here, or save the built one here")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--topk", type=int, default=3, help="documents per query when a request gives no topk")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    index = _load_index(args.corpus, args.index_dir)
    uvicorn.run(create_app(index, args.topk), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
