"""What slow searches cost a multi-turn rollout, lockstep (``batch``) against per-trajectory
(``async``) scheduling, on vLLM's engine with a tiny policy and a real HTTP search server on
loopback whose latency is drawn per query from a log-normal (median 0.3 s, 99th percentile 3 s).

    python benchmarks/agent_latency.py [--prompts 16] [--n 4] [--max-turns 4] [--rounds 3]
                                       [--fail 0.0] [--engine vllm|hf]

The policy is a random tiny Qwen2 taught for a few seconds to search first and then, after each
result, to search again or answer (about one in three), sampled at temperature 1: trajectories make
one to four searches. The server speaks the retrieval API of the ``wiki`` backend; a request of
several queries takes as long as its slowest one (the queries are served side by side); with
``--fail`` that share of requests answers 503 after its latency (the backend's retries apply).
Timed per round, interleaved: ``batch`` and ``async`` against the slow server, and both against the
same server with no latency. ``bound_s`` is, for each ``async`` round, the largest over trajectories
of that trajectory's own generation time plus its own search time (the loop's ``rollout/floor_s``):
no rollout step that waits for all its trajectories can end sooner.

Prints a table (min / median / max seconds per rollout step) and the ratios; its last line is a
JSON object with the medians: ``{"zero_latency_s", "batch_s", "async_s", "bound_s", ...}``.
"""

import argparse
import http.server
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time

from rollout import make_batch  # benchmarks/rollout.py: this folder is on the path when a script here runs
from transformers import AutoTokenizer

from verl.protocol import DataProto, RolloutSettings
from verl.utils.tiny_model import build_tiny_model, teach
from zerosearch import prompts
from zerosearch.eval import LocalRollout, build_engine
from zerosearch.generation import SearchGenerationManager
from zerosearch.train import load_config

MODEL = dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=2, num_kv_heads=1)
DOCUMENTS = ["The register lists the founder of the company.", "A later filing names the same founder."]
SEARCH, ANSWER = "<search> founder of the company </search>", "<answer> Mira Oskel </answer>"


class LatencyServer:
    """``POST /retrieve`` on 127.0.0.1 in a process of its own (its threads never compete with the
    rollout for this process's interpreter): each query's latency drawn from a seeded log-normal
    (``median`` 0: none), a request answered after the slowest of its queries."""

    def __init__(self, median: float, p99: float, fail: float = 0.0, seed: int = 0):
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self.process = context.Process(target=serve, args=(median, p99, fail, seed, ports), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{ports.get(timeout=60)}/retrieve"

    def close(self) -> None:
        self.process.terminate()
        self.process.join(10)


def serve(median: float, p99: float, fail: float, seed: int, ports) -> None:
    sigma = math.log(p99 / median) / 2.3263 if median > 0 else 0.0  # 2.3263: the normal's 99th percentile
    rng, lock = random.Random(seed), threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            queries, topk = body["queries"], body.get("topk") or len(DOCUMENTS)
            with lock:
                waits = [median * math.exp(sigma * rng.gauss(0, 1)) if median else 0.0 for _ in queries]
                failed = rng.random() < fail
            time.sleep(max(waits, default=0.0))
            if failed:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            hits = [{"document": {"contents": f"Filing\n{doc}"}, "score": 1.0} for doc in DOCUMENTS[:topk]]
            reply = json.dumps({"result": [hits for _ in queries]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 256  # every trajectory of a step may connect at once
    ports.put(httpd.server_address[1])
    httpd.serve_forever()


def teach_policy(model_dir: str) -> None:
    """First turn: search. After a result: search again (2 in 3) or answer (1 in 3)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    observation = prompts.format_observation(DOCUMENTS)
    contexts, targets = [], []
    for i in range(12):
        question = prompts.policy_prompt(f"Who founded company number {i}?")
        contexts.append(question)
        targets.append(SEARCH)
        for searches in (1, 2, 3):
            for k in range(3):
                contexts.append(question + (SEARCH + observation) * searches)
                targets.append(ANSWER if (i + searches + k) % 3 == 0 else SEARCH)
    teach(model_dir, contexts, [t + tokenizer.eos_token for t in targets], steps=600, lr=2e-3)


def bench_config(args, model_path: str, url: str, scheduling: str):
    return load_config(
        "zerosearch_grpo",
        [
            f"actor_rollout_ref.rollout.name={args.engine}",
            f"actor_rollout_ref.rollout.n={args.n}",
            f"actor_rollout_ref.rollout.max_num_seqs={args.prompts * args.n}",
            f"actor_rollout_ref.rollout.agent.scheduling={scheduling}",
            f"actor_rollout_ref.model.path={model_path}",
            "data.max_response_length=16",
            "data.max_prompt_length=96",
            f"actor_rollout_ref.rollout.agent.max_turns={args.max_turns}",
            "actor_rollout_ref.rollout.agent.max_obs_length=48",
            "search.mode=wiki",
            "search.engine=wiki",
            f"search.retriever_url={url}",
            "search.cache=none",
            "search.topk=2",
        ],
    )


def timed_step(manager: SearchGenerationManager, batch: DataProto) -> tuple[float, dict]:
    engine = manager.wg.rollout
    if hasattr(engine, "llm"):
        engine.llm.reset_prefix_cache()  # every step starts cold, as a training step's new prompts do
    batch.meta_info["rollout"] = RolloutSettings(step=1, total_steps=2)
    start = time.perf_counter()
    out = manager.generate_sequences(batch)
    return time.perf_counter() - start, out.meta_info["metrics"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4, help="trajectories per prompt")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per setting, after one warm-up round")
    parser.add_argument("--median", type=float, default=0.3, help="median search latency, seconds")
    parser.add_argument("--p99", type=float, default=3.0, help="99th percentile search latency, seconds")
    parser.add_argument("--fail", type=float, default=0.0, help="share of search requests answered 503")
    parser.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    slow = LatencyServer(args.median, args.p99, args.fail, seed=1)
    quick = LatencyServer(0.0, 0.0, args.fail, seed=2)
    with tempfile.TemporaryDirectory() as root:
        texts = [prompts.POLICY_INSTRUCTION, SEARCH, ANSWER, prompts.format_observation(DOCUMENTS)] * 4
        path = str(build_tiny_model(os.path.join(root, "policy"), texts=texts, **MODEL))
        teach_policy(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        engine = build_engine(bench_config(args, path, slow.url, "batch"), path, tokenizer, "cpu")
        rollout = LocalRollout(engine, greedy=False)  # one engine for every setting

        def manager(url: str, scheduling: str) -> SearchGenerationManager:
            return SearchGenerationManager(bench_config(args, path, url, scheduling), rollout, tokenizer)

        settings = {
            "batch, zero latency": manager(quick.url, "batch"),
            "async, zero latency": manager(quick.url, "async"),
            "batch": manager(slow.url, "batch"),
            "async": manager(slow.url, "async"),
        }
        batch = make_batch(tokenizer, args.prompts)
        times: dict[str, list[float]] = {name: [] for name in settings}
        metrics: dict[str, list[dict]] = {name: [] for name in settings}
        print(
            f"{args.prompts} prompts x {args.n}, max_turns {args.max_turns}, {args.engine}, latency median "
            f"{args.median} s / p99 {args.p99} s, {args.fail:.0%} of requests failing",
            flush=True,
        )
        for round_ in range(args.rounds + 1):
            for name, each in settings.items():
                seconds, step_metrics = timed_step(each, batch)
                if round_:
                    times[name].append(seconds)
                    metrics[name].append(step_metrics)
                print(f"round {round_}{' (warm-up)' if not round_ else ''} {name}: {seconds:.2f} s", flush=True)
    slow.close()
    quick.close()
    median = {name: statistics.median(t) for name, t in times.items()}
    bound = statistics.median(m["rollout/floor_s"] for m in metrics["async"])
    rows = ["| scheduling | search latency | s / step (min / median / max) | searches / trajectory | engine idle |"]
    rows.append("|---|---|---|---:|---:|")
    for name, each in times.items():
        scheduling, _, latency = name.partition(", ")
        searches = statistics.mean(m["search/searches_mean"] for m in metrics[name])
        idle = statistics.mean(m["rollout/engine_idle_frac"] for m in metrics[name])
        rows.append(
            f"| {scheduling} | {latency or 'log-normal'} | {min(each):.2f} / {median[name]:.2f} / {max(each):.2f} "
            f"| {searches:.2f} | {idle:.0%} |"
        )
    print("\n" + "\n".join(rows))
    print(
        f"\nasync ÷ batch {median['async'] / median['batch']:.2f} (target ≤ 0.70); async ÷ bound "
        f"{median['async'] / bound:.2f} (target ≤ 1.20); batch ÷ zero latency "
        f"{median['batch'] / median['batch, zero latency']:.2f}; async ÷ zero latency "
        f"{median['async'] / median['batch, zero latency']:.2f}"
    )
    result = {
        "zero_latency_s": round(median["batch, zero latency"], 3),
        "batch_s": round(median["batch"], 3),
        "async_s": round(median["async"], 3),
        "bound_s": round(bound, 3),
        "async_zero_latency_s": round(median["async, zero latency"], 3),
        "fail": args.fail,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
