"""Whole runs of the CPU example (examples/digits) with 2 FSDP worker processes."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "digits", "train.py")
sys.path.insert(0, os.path.dirname(EXAMPLE))
from reward import compute_score  # noqa: E402

pytestmark = pytest.mark.e2e


def run_example(
    out, algo: str, *overrides: str, seed: int | None = None, timeout: int = 400, env: dict | None = None
) -> list[dict]:
    """The example's metrics, read from the folder this test chose (never from its output)."""
    seeds = [] if seed is None else ["--seed", str(seed), f"trainer.seed={seed}"]
    proc = subprocess.run(
        [sys.executable, EXAMPLE, "--out", str(out), "--algo", algo, *overrides, *seeds],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    with open(os.path.join(out, "checkpoints", algo, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def train(learning_seed):
    """``run_example`` with the seed of ``--learning-seed`` (None: the example's defaults)."""
    return functools.partial(run_example, seed=learning_seed)


@pytest.mark.parametrize("algo", ["grpo", "reinforce", "gae"])
def test_training_raises_the_reward(tmp_path, algo, train):
    rollout_dir = tmp_path / "rollouts"
    records = train(tmp_path, algo, "trainer.total_training_steps=30", f"trainer.rollout_data_dir={rollout_dir}")
    steps = [r for r in records if r["step"] > 0]
    assert [r["step"] for r in steps] == list(range(1, 31))
    rewards = [r["reward/score/mean"] for r in steps]
    first, last = np.mean(rewards[:5]), np.mean(rewards[-5:])
    assert last > first + 0.1 and last > 2 * first, rewards
    for key in (
        "timing_s/gen",
        "timing_s/update_actor",
        "timing_s/sync_weights",
        "perf/throughput",
        "actor/pg_loss",
        "actor/entropy",
        "response_length/mean",
        "reward/score/mean",
    ):
        assert key in steps[-1], key
    # The rollout samples the policy the actor scores: fp32, temperature 1, no top-k/top-p.
    assert max(r["rollout/log_prob_diff_mean"] for r in steps) < 1e-3
    # One epoch over one mini-batch: the update's forward pass gives the old log-probs, except
    # where the reward's KL penalty (gae here) needs them before the update.
    assert ("timing_s/old_log_prob" in steps[-1]) == (algo == "gae")
    if algo == "gae":
        assert {"critic/vf_loss", "timing_s/values", "timing_s/update_critic", "critic/kl"} <= steps[-1].keys()
    else:
        assert "actor/kl_loss" in steps[-1]
    assert "val/digits/score" in records[0] and records[0]["step"] == 0  # validation before training
    # Rollout dumps: one JSONL per step; ids, mask and reward agree with the response text.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    rows = [json.loads(line) for line in open(rollout_dir / "30.jsonl")]
    assert len(rows) == 16 * 4
    for row in rows:
        assert len(row["response_ids"]) == len(row["response_mask"]) and all(m == 1 for m in row["response_mask"])
        assert row["data_source"] == "digits" and row["prompt"]
        assert tokenizer.decode(row["response_ids"]) == row["response"]
        text = tokenizer.decode(row["response_ids"], skip_special_tokens=True)
        assert row["reward"] == pytest.approx(compute_score("digits", text)["score"], abs=1e-6)


def test_grpo_learns_with_the_vllm_rollout(tmp_path, train):
    """The same task with the rollout on an in-process vLLM engine (vLLM's CPU build) spanning both
    workers (tensor parallel: each runs its shard), weights synced in memory after every update."""
    records = train(
        tmp_path,
        "grpo",
        "--heads",
        "2",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
        "trainer.total_training_steps=30",
        "trainer.test_freq=15",
    )
    steps = [r for r in records if r["step"] > 0]
    rewards = [r["reward/score/mean"] for r in steps]
    first, last = np.mean(rewards[:5]), np.mean(rewards[-5:])
    assert last > first + 0.1 and last > 2 * first, rewards
    # vLLM sampled each token with the log-prob the FSDP actor recomputes (fp32 on both sides).
    assert max(r["rollout/log_prob_diff_max"] for r in steps) < 1e-4
    assert "val/digits/score" in records[0] and "val/digits/score" in steps[-1]


# The tiny model's output head is random at std 0.02, so changing the hidden state alone moves its
# next-token distribution only a little (with adapters on every linear layer but the head, a direct
# likelihood fit of digits saturates at p=0.04): the head gets an adapter too.
LORA = [
    "actor_rollout_ref.model.lora_rank=8",
    "actor_rollout_ref.model.lora_alpha=16",
    "actor_rollout_ref.model.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head]",
    "actor_rollout_ref.actor.optim.lr=5e-3",
]


def test_grpo_learns_with_lora_adapters(tmp_path, train):
    """LoRA through peft with the vLLM rollout: the engine gets the merged weights after every
    update, the reference is the base model (adapters off) and the checkpoint holds the adapters."""
    records = train(
        tmp_path,
        "grpo",
        "--heads",
        "2",
        "actor_rollout_ref.rollout.name=vllm",
        "trainer.total_training_steps=30",
        "trainer.test_freq=15",
        "trainer.save_freq=30",
        *LORA,
    )
    steps = [r for r in records if r["step"] > 0]
    rewards = [r["reward/score/mean"] for r in steps]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.3, rewards
    assert max(r["rollout/log_prob_diff_max"] for r in steps) < 1e-4  # vLLM sampled with the merged weights
    # Adapters start at B = 0: the first policy is the base model, the reference, exactly.
    assert steps[0]["actor/kl_loss"] == 0 and steps[-1]["actor/kl_loss"] > 0.1

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    saved = tmp_path / "checkpoints" / "grpo" / "global_step_30" / "actor"
    adapter = json.loads((saved / "lora_adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and "lm_head" in adapter["target_modules"]
    tokens = torch.tensor([[3, 4, 5, 6]])
    merged = AutoModelForCausalLM.from_pretrained(saved / "huggingface")(input_ids=tokens).logits
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    with_adapter = PeftModel.from_pretrained(base, saved / "lora_adapter")(input_ids=tokens).logits
    torch.testing.assert_close(merged, with_adapter)


def test_old_log_probs_from_the_rollout_skip_the_old_log_prob_pass(tmp_path, train):
    """Two mini-batches per step would need the old-log-prob pass; with algorithm.old_log_prob=
    from_rollout (verl's bypass_mode) the rollout's log-probs stand in for it, and the mismatch is
    measured on the update's first mini-batch."""
    records = train(
        tmp_path,
        "grpo",
        "trainer.total_training_steps=3",
        "trainer.val_before_train=false",
        "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "algorithm.old_log_prob=from_rollout",
    )
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert "timing_s/old_log_prob" not in r
        assert 0 <= r["rollout/log_prob_diff_max"] < 1e-3  # fp32 on both sides: numerics only
        assert r["actor/entropy"] > 0


def test_resume_continues_at_the_next_step_as_if_never_stopped(tmp_path, train):
    """Run A: 4 steps in one go. Run B: 3 steps saving each, stop, its last checkpoint corrupted;
    resume falls back to step 2 and runs to 4. With the dataloader position, optimizer, LR schedule
    and RNG states restored, steps 3-4 of B equal those of A."""
    common = ["trainer.save_freq=1", "trainer.val_before_train=false", "trainer.test_freq=-1"]
    straight = train(tmp_path / "a", "gae", "trainer.total_training_steps=4", *common)
    train(tmp_path / "b", "gae", "trainer.total_training_steps=3", *common)
    checkpoint = tmp_path / "b" / "checkpoints" / "gae"
    for shard in (checkpoint / "global_step_3" / "actor" / "dcp").glob("*.distcp"):
        shard.write_bytes(b"torn")  # the disk filled up after the step was marked latest
    resumed = train(tmp_path / "b", "gae", "trainer.total_training_steps=4", *common)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]  # one line per step: the lost step 3 set aside
    superseded = (checkpoint / "metrics.superseded.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in superseded] == [3]
    for a, b in zip(straight[2:], resumed[2:], strict=True):
        for key in (
            "reward/score/mean",
            "actor/pg_loss",
            "critic/vf_loss",
            "critic/values/mean",
            "actor/entropy",
            "response_length/mean",
            "prompt_length/mean",
            "critic/kl_coef",
        ):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (b["step"], key)
    assert (checkpoint / "latest_checkpointed_iteration.txt").read_text() == "4"
    hf = checkpoint / "global_step_4" / "actor" / "huggingface"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(hf)
    AutoTokenizer.from_pretrained(hf)


def test_kill_9_during_a_save_loses_at_most_that_step(tmp_path):
    """The whole run (driver and workers) is killed with SIGKILL as soon as step 3's checkpoint
    folder appears, in the middle of writing it. Resume starts from the last checkpoint marked
    complete, redoes what was lost, and ends with one metrics line per step."""
    common = ["trainer.save_freq=1", "trainer.val_before_train=false", "trainer.test_freq=-1"]
    checkpoint = tmp_path / "run" / "checkpoints" / "gae"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, EXAMPLE, "--out", str(tmp_path / "run"), "--algo", "gae"]
    proc = subprocess.Popen(
        [*args, "trainer.total_training_steps=4", *common],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: Ray's processes die with it
    )
    try:
        deadline = time.monotonic() + 300
        while not (checkpoint / "global_step_3").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before step 3 was saved"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    marked = int((checkpoint / "latest_checkpointed_iteration.txt").read_text())
    assert marked in (2, 3)  # 3 only if its save completed before the signal landed

    resumed = run_example(tmp_path / "run", "gae", "trainer.total_training_steps=4", *common)

    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert (checkpoint / "latest_checkpointed_iteration.txt").read_text() == "4"


def test_roles_in_separate_processes_with_gradient_checkpointing(tmp_path):
    """Actor/rollout, reference and critic each in their own worker processes."""
    records = run_example(
        tmp_path,
        "gae",
        "trainer.total_training_steps=2",
        "trainer.colocate_workers=false",
        "actor_rollout_ref.model.enable_gradient_checkpointing=true",
        "critic.model.enable_gradient_checkpointing=true",
        "trainer.val_before_train=false",
    )
    assert [r["step"] for r in records] == [1, 2]
    assert {"critic/vf_loss", "critic/kl", "actor/pg_loss"} <= records[-1].keys()


@pytest.mark.gpu
def test_training_on_one_gpu_with_bf16(tmp_path):
    records = run_example(
        tmp_path, "grpo", "trainer.total_training_steps=30", "trainer.device=cuda", "trainer.n_gpus_per_node=1"
    )
    rewards = [r["reward/score/mean"] for r in records if r["step"] > 0]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.1


def test_a_tool_environment_chosen_by_config_trains(tmp_path):
    """``actor_rollout_ref.rollout.agent.env`` alone turns the example into a multi-turn agent: the
    engine's agent manager runs the test's calculator environment; its notices are observations
    (mask 0) inside the responses the actor trains on."""
    rollout_dir = tmp_path / "rollouts"
    records = run_example(
        tmp_path,
        "grpo",
        "trainer.total_training_steps=2",
        "trainer.val_before_train=false",
        f"trainer.rollout_data_dir={rollout_dir}",
        "actor_rollout_ref.rollout.agent.env=tests.workers.test_agent_loop:RowCalcEnv",
        "actor_rollout_ref.rollout.agent.max_turns=2",
        "actor_rollout_ref.rollout.agent.max_obs_length=16",
        "actor_rollout_ref.rollout.agent.scheduling=async",
        env={"PYTHONPATH": REPO},  # the environment class lives in the tests
    )
    steps = [r for r in records if r["step"] > 0]
    assert [r["step"] for r in steps] == [1, 2]
    assert steps[-1]["rollout/turns_max"] >= 2 and "actor/pg_loss" in steps[-1]
    rows = [json.loads(line) for line in open(rollout_dir / "2.jsonl")]
    masks = [m for row in rows for m in row["response_mask"]]
    assert 0 in masks and 1 in masks  # sampled turns and inserted observations
    assert max(len(row["response_ids"]) for row in rows) > 12  # longer than one turn of 12 tokens
