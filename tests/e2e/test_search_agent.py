"""The search agent end to end on CPU: train_grpo.sh with a tiny policy, the in-process simulation
LLM for training searches and the `corpus` engine for validation; then evaluation."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.loopback import LoopbackServer, read_body, respond
from verl.utils.tiny_model import teach

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.e2e

FACTS = [
    ("Who founded the city of Varlen?", "Mira Oskel"),
    ("In which year did the Tessar bridge open?", "1874"),
    ("What river flows through Quenby?", "the Aldor"),
    ("Who painted the Grey Harbour?", "Ilsa Brandt"),
]


def warm_start(model_dir, prompts_text, targets, steps=80):
    """A few steps of supervised tuning so the random policy writes tagged actions; without it a
    random model never searches and the search path would go untested."""
    teach(model_dir, prompts_text, targets, steps)


def grading_examples(tokenizer):
    """Chat prompts in the tuned critic's format (critictor.style=sft) for one and two searches of
    each fact, with verdict lines in the strict format: what a tiny critic is warm-started on."""
    from zerosearch.prompts import format_verdicts, grading_messages

    prompts_text, targets = [], []
    for question, answer in FACTS:
        for searches in (
            [(question, [f"{question.rstrip('?')}: {answer}."])],
            [(question, ["Nothing here."]), (answer, [f"{question.rstrip('?')}: {answer}."])],
        ):
            messages = grading_messages(question, [answer], [("", q, d) for q, d in searches], None, "sft")
            prompts_text.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            verdicts = [(answer in d[0], "") for _, d in searches]
            targets.append(format_verdicts(verdicts) + "<|im_end|>")
    return prompts_text, targets


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from transformers import AutoTokenizer

    from verl.utils.tiny_model import build_tiny_model
    from zerosearch.data.prepare import prepare

    root = tmp_path_factory.mktemp("agent")
    source = root / "qa"
    for name in ("nq", "hotpotqa"):
        (source / name).mkdir(parents=True)
        rows = [{"id": f"{name}{i}", "question": q, "golden_answers": [a]} for i, (q, a) in enumerate(FACTS)]
        if name == "hotpotqa":  # the gold path: the fact's document (its text names the answer)
            rows = [row | {"supporting": [[f"Fact {i}", row["golden_answers"][0]]]} for i, row in enumerate(rows)]
        for split in ("train", "test"):
            with open(source / name / f"{split}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    train, test = prepare(["nq", "hotpotqa"], ["nq", "hotpotqa"], str(source), str(root / "data"))
    with open(root / "corpus.jsonl", "w") as f:
        for i, (q, a) in enumerate(FACTS):
            f.write(json.dumps({"id": str(i), "contents": f"Fact {i}\n{q.rstrip('?')}: {a}."}) + "\n")
    # Heads of 32, the smallest vLLM's CPU attention takes: the recipe rolls out with vLLM.
    policy = build_tiny_model(
        root / "policy", vocab_size=600, hidden_size=64, intermediate_size=128, num_heads=2, num_kv_heads=1, seed=0
    )
    simulator = build_tiny_model(root / "simulator", vocab_size=600, hidden_size=32, intermediate_size=64, seed=1)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    frame = pd.read_parquet(train)
    prompts_text = [
        tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False) for p in frame["prompt"][:4]
    ]
    targets = ["<think>I should look it up.</think><search> " + q + " </search>" for q, _ in FACTS]
    warm_start(policy, prompts_text, targets)
    return root, policy, simulator


@pytest.fixture(scope="module")
def critic(world):
    """A tiny critic LLM warm-started to write verdict lines."""
    from transformers import AutoTokenizer

    from verl.utils.tiny_model import build_tiny_model

    root, _, _ = world
    model = build_tiny_model(root / "critic", vocab_size=600, hidden_size=64, intermediate_size=128, seed=3)
    warm_start(model, *grading_examples(AutoTokenizer.from_pretrained(model)), steps=200)
    return model


def run(args, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


# Every tiny train_grpo.sh run: 4 prompts of at most 256 tokens, 48 new tokens per turn, one
# optimizer step per batch, on two CPU workers.
TINY_RUN = [
    "data.train_batch_size=4",
    "data.max_prompt_length=256",
    "data.max_response_length=48",
    "actor_rollout_ref.rollout.agent.max_obs_length=64",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
    "actor_rollout_ref.model.enable_gradient_checkpointing=false",
    "search.simulator.temperature=0",  # the tiny simulator answers greedily: runs repeat
    "trainer.device=cpu",
]


def train_grpo(world, checkpoints, keys: dict, overrides=(), timeout=600):
    """``bash train_grpo.sh`` on the tiny world's policy and data with the front door's ``keys``
    (KEY value), then ``TINY_RUN``, checkpoints (and metrics.jsonl) in ``checkpoints``, and
    ``overrides`` (key=value)."""
    root, policy, _ = world
    args = ["bash", "train_grpo.sh", "NUM_GPUS_PER_NODE", "2", "MODEL_PATH", str(policy)]
    args += ["DATA_PATH", str(root / "data")]
    for key, value in keys.items():
        args += [key, str(value)]
    args += ["--", *TINY_RUN, f"trainer.default_local_dir={checkpoints}", *overrides]
    return run(args, timeout)


def test_train_grpo_script_with_in_process_simulator_and_corpus_engine(world, critic):
    """Both roles of the critic LLM are on, in-process: it grades every search and comments after it."""
    from transformers import AutoTokenizer

    root, policy, simulator = world
    rollouts, checkpoints = root / "rollouts", root / "checkpoints"
    train_grpo(
        world,
        checkpoints,
        {
            "TOTAL_STEPS": "2",
            "SEARCH_MODE": "simulate_prompt",
            "SIMULATION_LLM": str(simulator),
            "START_THRESHOLD": "0.2",
            "END_THRESHOLD": "0.6",
            "SEARCH_ENGINE": "corpus",
            "MAX_TURNS": "2",
            "TOPK": "2",
            "LOGGER": "console,file",
            "EXPERIMENT_NAME": "tiny_agent",
            "RETROSPECTIVE_CRITIC": "true",
            "INTERACTIVE_CRITIC": "true",
            "CRITIC_BACKEND": "in_process",
            "CRITIC_LLM": str(critic),
        },
        [
            "critictor.style=sft",
            "critictor.max_tokens=16",
            "critictor.interactive.max_tokens=8",
            "critictor.retry.max_retries=0",
            "search.simulator.in_process=true",
            "search.simulator.max_tokens=24",
            f"search.corpus_path={root / 'corpus.jsonl'}",
            "data.val_batch_size=8",
            "actor_rollout_ref.rollout.n=2",
            "trainer.val_before_train=true",
            "trainer.test_freq=2",
            f"trainer.rollout_data_dir={rollouts}",
            "search.retry.max_retries=0",
        ],
    )
    records = [json.loads(line) for line in open(checkpoints / "metrics.jsonl")]
    assert [r["step"] for r in records] == [0, 1, 2]
    step = records[1]
    for key in (
        "search/searches_mean",
        "search/turns_mean",
        "search/valid_action_rate",
        "search/answer_rate",
        "search/obs_truncated",
        "curriculum/noise_p",
        "search/noisy_rate",
        "reward/f1/mean",
        "reward/em/mean",
        "reward/cover_em/mean",
        "critictor/useful_rate",
        "critictor/turn_reward_mean",
        "critictor/graded_rate",
        "critictor/failures",
        "critictor/critiques_mean",
        "critictor/vague_rate",
    ):
        assert key in step, key
    assert any("critictor/agreement" in r for r in records[1:])  # logged once a search is graded
    assert "critictor/graded_rate" not in records[0]  # validation never calls the critic
    assert step["search/searches_mean"] > 0  # the warm-started policy searches; the simulator answered
    # vLLM sampled each token with the log-prob the FSDP actor recomputes, observations between turns.
    assert max(r["rollout/log_prob_diff_max"] for r in records[1:]) < 1e-4
    assert step["curriculum/noise_p"] == pytest.approx(0.2 + (4 ** (1 / 2) - 1) / 3 * 0.4)
    for source in ("nq", "hotpotqa"):
        assert f"val/{source}/f1" in records[0] and f"val/{source}/em" in records[2]
    rows = [json.loads(line) for line in open(rollouts / "1.jsonl")]
    assert len(rows) == 8
    searched = [r for r in rows if "<information>" in r["response"]]
    assert searched, "no rollout searched"
    for r in searched:
        assert 0 in r["response_mask"] and 1 in r["response_mask"]
    # critiques came after searches, as observations: only the mask-0 tokens hold them
    tokenizer = AutoTokenizer.from_pretrained(policy)
    critiqued = [r for r in searched if "<critique>" in r["response"]]
    assert critiqued, "no search got a critique"
    for r in critiqued:
        sampled = [i for i, m in zip(r["response_ids"], r["response_mask"], strict=True) if m == 1]
        assert "critique>" not in tokenizer.decode(sampled)
    # the dump carries each turn with the critic's verdict and reason
    turns = [turn for r in rows for turn in r["turns"]]
    assert {"kind", "content", "documents", "critique", "vague", "verdict", "reason"} <= set(turns[0])
    graded = [turn for turn in turns if turn["verdict"] is not None]
    assert graded and all(turn["kind"] == "search" for turn in graded)
    assert sum(r["critictor/graded_rate"] for r in records[1:]) > 0


def test_train_grpo_script_with_the_rule_path_judge(world):
    """The ideal critic as a backend: the path judge grades every search against the rows' supporting
    facts, and the run logs its verdicts' agreement with them (the judge itself: kappa 1)."""
    root, _, _ = world
    checkpoints = root / "path_judge"
    train_grpo(
        world,
        checkpoints,
        {
            "TOTAL_STEPS": "2",
            "SEARCH_MODE": "corpus",
            "SEARCH_ENGINE": "corpus",
            "CORPUS_PATH": str(root / "corpus.jsonl"),
            "MAX_TURNS": "2",
            "TOPK": "1",
            "ROLLOUT": "hf",
            "RETROSPECTIVE_CRITIC": "true",
            "CRITIC_BACKEND": "rule",
            "RULE_JUDGE": "path",
        },
        [
            "actor_rollout_ref.rollout.n=4",
            "trainer.val_before_train=false",
            "trainer.test_freq=-1",
        ],
    )
    records = [json.loads(line) for line in open(checkpoints / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2]
    graded = [r for r in records if "critictor/agreement" in r]
    assert graded, records
    for r in graded:
        assert r["critictor/agreement"] == 1.0 and r["critictor/graded_rate"] == 1.0
        assert 0 <= r["critictor/majority_baseline"] <= 1 and 0 <= r["critictor/answer_judge_agreement"] <= 1
    assert any(r.get("critictor/kappa") == 1.0 for r in graded)  # useful and useless searches both seen


def test_eval_writes_the_table(world):
    root, policy, _ = world
    out = root / "eval"
    run(
        [
            "bash",
            "scripts/eval.sh",
            "MODEL_PATH",
            str(policy),
            "DATA_PATH",
            str(root / "data"),
            "SEARCH_ENGINE",
            "corpus",
            "OUT_DIR",
            str(out),
            "CORPUS_PATH",
            str(root / "corpus.jsonl"),
            "MAX_TURNS",
            "2",
            "TOPK",
            "2",
            "--",
            "data.max_response_length=48",
            "actor_rollout_ref.rollout.agent.max_obs_length=64",
        ]
    )
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results) == {"nq", "hotpotqa", "avg", "all"} and results["all"]["n"] == 8
    for metrics in results.values():
        assert {"em", "cover_em", "f1", "searches", "answered"} <= metrics.keys()
    assert results["all"]["searches"] > 0
    table = (out / "results.md").read_text()
    assert "| data source |" in table and "| nq |" in table
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 8


class RecordingProxy(LoopbackServer):
    """Forwards the trainer's requests to the vLLM server and keeps their JSON bodies, so the test
    sees exactly what each simulated search asked for."""

    def __init__(self, upstream: str):
        self.upstream, self.bodies = upstream, []
        super().__init__(self.forward)

    def forward(self, handler):
        import httpx

        body = read_body(handler)
        self.bodies.append(json.loads(body))
        headers = {"Content-Type": "application/json"}
        reply = httpx.post(self.upstream + handler.path, content=body, headers=headers, timeout=60)
        respond(handler, reply.status_code, reply.content)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_simulator(world):
    """The simulation LLM, tuned a little to write "Doc 1: ..." replies and, as the critic LLM,
    verdict lines, served by a real vLLM OpenAI-compatible server (vLLM's CPU build) on loopback,
    behind a recording proxy."""
    import httpx
    from transformers import AutoTokenizer

    from verl.utils.tiny_model import build_tiny_model
    from zerosearch.prompts import simulator_messages

    root, _, _ = world
    model = build_tiny_model(
        root / "served_simulator",
        vocab_size=600,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        num_kv_heads=1,
        seed=2,
    )
    tokenizer = AutoTokenizer.from_pretrained(model)
    chats = [
        simulator_messages(q.split()[-1], q, [a], noisy, 2, style)
        for q, a in FACTS
        for noisy in (False, True)
        for style in ("sft", "prompt")
    ]
    prompts_text = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    targets = [f"Doc 1: {a} is the answer here.\nDoc 2: more about it.<|im_end|>" for _, a in FACTS for _ in range(4)]
    grading_prompts, verdicts = grading_examples(tokenizer)
    warm_start(model, prompts_text + grading_prompts, targets + verdicts, steps=200)
    port = free_port()
    server = subprocess.Popen(
        [
            "bash",
            "scripts/launch_simulator_vllm.sh",
            "MODEL_PATH",
            str(model),
            "SERVED_NAME",
            "sim",
            "HOST",
            "127.0.0.1",
            "PORT",
            str(port),
            "DEVICE",
            "cpu",
            "KV_CACHE",
            "64M",
            "MAX_MODEL_LEN",
            "1024",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=open(root / "vllm_server.log", "w"),
    )
    try:
        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (root / "vllm_server.log").read_text()[-3000:]
            import time

            time.sleep(1)
        else:
            pytest.fail("the vLLM server did not answer within 240 s")
        yield RecordingProxy(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.parametrize("mode, steps, scheduling", [("simulate_sft", 2, "async"), ("simulate_prompt", 1, "batch")])
def test_training_against_a_real_vllm_server(world, vllm_simulator, mode, steps, scheduling):
    """The policy rolls out on vLLM in the workers; its searches go to the simulation LLM on a vLLM
    server, and the critic LLM on the same server grades them. Every useful simulator request and
    every grading request carries its own row's question with that question's gold answer, with
    turns in lockstep and with each trajectory on its own."""
    root, _, _ = world
    checkpoints = root / f"checkpoints_{mode}"
    proxy = vllm_simulator
    proxy.bodies.clear()
    train_grpo(
        world,
        checkpoints,
        {
            "TOTAL_STEPS": str(steps),
            "SEARCH_MODE": mode,
            "SIMULATION_LLM": "sim",
            "IP": f"127.0.0.1:{proxy.port}",
            "SEARCH_ENGINE": "corpus",
            "MAX_TURNS": "2",
            "TOPK": "2",
            "LOGGER": "file",
            "ROLLOUT": "vllm",
            "AGENT_SCHEDULING": scheduling,
            "EXPERIMENT_NAME": f"served_{mode}",
            "RETROSPECTIVE_CRITIC": "true",
            "CRITIC_LLM": "sim",
            "CRITIC_IP": f"127.0.0.1:{proxy.port}",
        },
        [
            "critictor.style=sft",
            "critictor.max_tokens=16",
            "critictor.retry.max_retries=1",
            "critictor.retry.backoff_s=0.1",
            "search.simulator.max_tokens=24",
            f"search.corpus_path={root / 'corpus.jsonl'}",
            "search.retry.max_retries=1",
            "search.retry.backoff_s=0.1",
            "search.retry.timeout_s=30",
            "actor_rollout_ref.rollout.n=2",
            "trainer.val_before_train=false",
            "trainer.test_freq=-1",
        ],
    )
    records = [json.loads(line) for line in open(checkpoints / "metrics.jsonl")]
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    searches = sum(r["search/searches_mean"] for r in records)
    assert searches > 0 and proxy.bodies, "the policy never searched"
    assert sum(r["search/failures"] for r in records) < len(proxy.bodies)  # the server answered
    gold = dict(FACTS)
    useful = [
        b["messages"][0]["content"]
        for b in proxy.bodies
        if "useful" in b["messages"][0]["content"] or "correct answer" in b["messages"][0]["content"]
    ]
    assert all(b["model"] == "sim" for b in proxy.bodies)
    for text in useful:
        question = next(q for q in gold if q in text)
        assert gold[question] in text, text  # its own row's answer, never another row's
    grading = [b["messages"][0]["content"] for b in proxy.bodies if b["messages"][0]["content"].endswith("Verdicts:")]
    assert grading, "the critic was never asked"
    for text in grading:
        [question] = [q for q in gold if f"Question: {q}" in text]
        assert f"Answer: {gold[question]}\n" in text
    assert all("critictor/graded_rate" in r and "critictor/failures" in r for r in records)
    assert all(r["rollout/turns_max"] >= 1 and 0 <= r["rollout/engine_idle_frac"] <= 1 for r in records)


def test_training_on_verls_search_data_with_tool_calls(world, tmp_path):
    """``agent.action_format=tool_call`` on rows in the layout of verl's search data: the prompts
    declare the search tool through a chat template that has tools, a policy taught to call it
    searches, and the documents come back in the template's tool-response turn (mask 0)."""
    import shutil

    from transformers import AutoTokenizer

    from tests.zerosearch.test_tool_calls import TOOL_TEMPLATE, search_call
    from zerosearch.prompts import SEARCH_TOOL

    root, policy, _ = world
    model = tmp_path / "policy"
    shutil.copytree(policy, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = TOOL_TEMPLATE
    tokenizer.save_pretrained(model)
    rows = []
    for i, (question, answer) in enumerate(FACTS):
        content = f"Answer the question, calling the search tool when you need facts. Question: {question}"
        rows.append(
            {  # the columns and nesting of verl's searchR1 preprocessed rows
                "data_source": "searchR1_nq",
                "prompt": [{"role": "user", "content": content}],
                "ability": "fact-reasoning",
                "reward_model": {"ground_truth": {"target": [answer]}, "style": "rule"},
                "extra_info": {
                    "index": i,
                    "need_tools_kwargs": True,
                    "question": question,
                    "split": "train",
                    "tools_kwargs": {"search": {"create_kwargs": {"ground_truth": {"target": [answer]}}}},
                },
            }
        )
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(rows).to_parquet(data / "train.parquet")
    pd.DataFrame(rows).to_parquet(data / "test.parquet")
    prompts_text = [
        tokenizer.apply_chat_template(row["prompt"], tools=[SEARCH_TOOL], add_generation_prompt=True, tokenize=False)
        for row in rows
    ]
    teach(model, prompts_text, [search_call(q) for q, _ in FACTS], steps=240)
    checkpoints, rollouts = tmp_path / "run", tmp_path / "rollouts"
    args = ["bash", "train_grpo.sh", "NUM_GPUS_PER_NODE", "2", "MODEL_PATH", str(model), "DATA_PATH", str(data)]
    keys = {"TOTAL_STEPS": "2", "SEARCH_MODE": "corpus", "SEARCH_ENGINE": "corpus", "MAX_TURNS": "1", "TOPK": "1"}
    keys |= {"CORPUS_PATH": str(root / "corpus.jsonl"), "ROLLOUT": "hf", "LOGGER": "console,file"}
    for key, value in keys.items():
        args += [key, value]
    args += ["--", *TINY_RUN, "data.max_prompt_length=512", "data.max_response_length=96"]
    args += [f"trainer.default_local_dir={checkpoints}"]  # the tools take 300 prompt tokens
    args += ["actor_rollout_ref.rollout.agent.action_format=tool_call", f"trainer.rollout_data_dir={rollouts}"]
    args += ["trainer.val_before_train=false", "trainer.test_freq=-1"]
    run(args)
    records = [json.loads(line) for line in open(checkpoints / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["search/searches_mean"] > 0  # the taught policy called the tool; the corpus answered
    dumped = [json.loads(line) for line in open(rollouts / "1.jsonl")]
    answered = [r for r in dumped if "<tool_response>" in r["response"]]
    assert answered, "no tool call was answered"
    for r in answered:
        observed = [i for i, m in zip(r["response_ids"], r["response_mask"], strict=True) if m == 0]
        assert "<tool_response>" in tokenizer.decode(observed, skip_special_tokens=False)
        assert "Fact" in tokenizer.decode(observed)  # the corpus document, inside the tool's turn
