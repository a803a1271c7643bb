"""train_grpo.sh against a simulation server that fails 3 requests in 10, in every way a server
fails: an error status, rate limiting, a hang, a reset connection, a body that is not JSON, a
reply without choices, and a reply trickled a byte a second. Training completes; each faulty reply
costs one attempt, counted; and the time spent waiting on searches stays within what the retry
policy's deadlines allow."""

import json
import socket
import struct
import threading
from collections import Counter

import pytest

from tests.e2e.test_search_agent import train_grpo, world  # noqa: F401  (world is a fixture)
from tests.loopback import LoopbackServer, read_body, respond

pytestmark = pytest.mark.e2e

FAULTS = ("500", "429", "hang", "reset", "bad_json", "no_choices", "trickle")
TIMEOUT_S, MAX_RETRIES, BACKOFF_S, MAX_TURNS = 2.0, 3, 0.05, 2
# The longest one request can wait: every attempt cut off at its deadline, and the backoffs between.
REQUEST_BUDGET_S = (MAX_RETRIES + 1) * TIMEOUT_S + BACKOFF_S * (2**MAX_RETRIES - 1)


def completion(content: str | None) -> bytes:
    choices = [] if content is None else [{"index": 0, "message": {"role": "assistant", "content": content}}]
    reply = {"id": "c", "object": "chat.completion", "created": 0, "model": "sim", "choices": choices}
    return json.dumps(reply).encode()


class ChaosServer(LoopbackServer):
    """OpenAI-compatible chat completions on loopback: requests 0, 3 and 6 of every 10 are faults,
    taking the kinds of FAULTS in turn; the others get two documents."""

    def __init__(self):
        self.served: Counter[str] = Counter()
        self.lock = threading.Lock()
        super().__init__(self.answer)

    def answer(self, handler):
        json.loads(read_body(handler))
        with self.lock:
            k = sum(self.served.values())
            kind = FAULTS[(k // 10 * 3 + (k % 10) // 3) % len(FAULTS)] if k % 10 in (0, 3, 6) else "ok"
            self.served[kind] += 1
        if kind in ("500", "429"):
            return respond(handler, int(kind), b'{"error": {"message": "scripted"}}')
        if kind == "hang":
            self.stopping.wait(120)
            return None
        if kind == "reset":  # close with RST instead of FIN
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            return None
        if kind == "bad_json":
            return respond(handler, 200, b'{"id": "c", "choices": [')
        if kind == "no_choices":
            return respond(handler, 200, completion(None))
        body = completion("Doc 1: The answer is in this page.\nDoc 2: Another page about it.")
        if kind == "ok":
            return respond(handler, 200, body)
        respond(handler, 200, body, send_body=False)  # trickle: headers now, then the body a byte a second
        for byte in body:
            if self.stopping.wait(1.0):
                return None
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
        return None


def test_training_survives_a_chaotic_simulation_server(world):  # noqa: F811
    root, _, _ = world
    checkpoints = root / "checkpoints_chaos"
    server = ChaosServer()
    try:
        train_grpo(
            world,
            checkpoints,
            {
                "TOTAL_STEPS": "2",
                "SEARCH_MODE": "simulate_prompt",
                "SIMULATION_LLM": "sim",
                "IP": f"127.0.0.1:{server.port}",
                "SEARCH_ENGINE": "corpus",
                "MAX_TURNS": str(MAX_TURNS),
                "TOPK": "2",
                "LOGGER": "file",
                "EXPERIMENT_NAME": "chaos",
            },
            [
                f"search.corpus_path={root / 'corpus.jsonl'}",
                "search.cache=none",  # every search reaches the server
                f"search.retry.timeout_s={TIMEOUT_S}",
                f"search.retry.max_retries={MAX_RETRIES}",
                f"search.retry.backoff_s={BACKOFF_S}",
                "search.retry.batch_timeout_s=null",
                "search.simulator.max_tokens=24",
                "actor_rollout_ref.rollout.n=4",
                "trainer.val_before_train=false",
                "trainer.test_freq=-1",
            ],
        )
    finally:
        server.close()
    records = [json.loads(line) for line in open(checkpoints / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2]
    served = server.served
    assert set(served) == {"ok", *FAULTS}, served  # every kind of fault came up
    total = {key: sum(r[f"search/{key}"] for r in records) for key in ("retries", "failures", "timeouts")}
    # Every faulty reply cost exactly one attempt: retried, or the last of a request that failed.
    assert total["retries"] + total["failures"] == sum(served[kind] for kind in FAULTS), (total, served)
    # Only a hang and a trickle run into the attempt deadline; the others fail at once.
    assert total["timeouts"] == served["hang"] + served["trickle"], (total, served)
    # A trickled reply takes about a minute in all; the deadline cut each one off at TIMEOUT_S.
    for record in records:
        assert record["search/seconds"] <= MAX_TURNS * REQUEST_BUDGET_S + 2.0, record["search/seconds"]
