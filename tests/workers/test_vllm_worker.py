"""The vLLM rollout inside the FSDP policy worker (Ray, gloo, 2 ranks): the log-probs vLLM sampled
with are the ones the actor recomputes, single-turn and multi-turn; after an actor update and a
weight sync the engine generates what transformers generates with the updated weights."""

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from verl.protocol import DataProto, RolloutSettings
from verl.single_controller import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
from verl.utils.tiny_model import build_tiny_model
from verl.workers.fsdp_workers import ActorRolloutRefWorker
from verl.workers.rollout.agent_loop import AgentEnv, AgentLoop, Observation, Step, Turn
from zerosearch import prompts
from zerosearch.generation import SearchGenerationManager
from zerosearch.search.base import NoSearch
from zerosearch.train import load_config

TOLERANCE = 1e-4  # fp32 on both sides; the incremental decode and one full pass differ by ~1e-6


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    texts = [prompts.policy_prompt(f"Who founded company {i}?") for i in range(8)]
    return str(
        build_tiny_model(
            tmp_path_factory.mktemp("worker"),
            vocab_size=500,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            num_kv_heads=1,
            texts=texts,
        )
    )


@pytest.fixture(scope="module")
def setup(ray_local, model_path):
    config = load_config(
        "zerosearch_grpo",
        [
            f"actor_rollout_ref.model.path={model_path}",
            "actor_rollout_ref.model.enable_gradient_checkpointing=false",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.max_num_seqs=16",
            "actor_rollout_ref.rollout.n=2",
            "actor_rollout_ref.actor.optim.lr=0.05",
            "actor_rollout_ref.actor.use_kl_loss=false",
            "data.train_batch_size=4",
            "data.max_prompt_length=128",
            "data.max_response_length=12",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
            "actor_rollout_ref.rollout.agent.max_turns=2",
            "actor_rollout_ref.rollout.agent.max_obs_length=24",
            "search.mode=corpus",
            "search.engine=corpus",
            "search.corpus_path=unused",
            "trainer.n_gpus_per_node=2",
            "trainer.device=cpu",
        ],
    )
    pool = RayResourcePool([2], use_gpu=False)
    group = RayWorkerGroup(
        pool,
        RayClassWithInitArgs(ActorRolloutRefWorker, (config, "actor_rollout")),
        "cpu",
        {"TOKENIZERS_PARALLELISM": "false"},
    )
    group.init_model()
    group.sync_rollout_weights()
    from transformers import AutoTokenizer

    yield config, group, AutoTokenizer.from_pretrained(model_path)
    group.shutdown()
    pool.release()


def prompt_batch(tokenizer, n_rows: int, width: int = 128) -> DataProto:
    """Left-padded prompts of different lengths, as the dataset gives them."""
    ids = torch.full((n_rows, width), tokenizer.pad_token_id)
    mask = torch.zeros((n_rows, width), dtype=torch.long)
    for i in range(n_rows):
        row = tokenizer.encode(prompts.policy_prompt(f"Who founded company {i}?" + " really" * i))
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return DataProto.from_dict(
        tensors={"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)},
        non_tensors={
            "reward_model": [{"ground_truth": ["x"]}] * n_rows,
            "extra_info": [{"question": f"q{i}", "index": i} for i in range(n_rows)],
            "data_source": ["toy"] * n_rows,
        },
    )


def assert_rollout_log_probs_match(group, batch: DataProto) -> None:
    actor = group.compute_log_prob(batch)
    mask = batch.batch["response_mask"].bool()
    gap = (batch.batch["rollout_log_probs"] - actor.batch["old_log_probs"]).abs()[mask]
    assert mask.sum() > 10 and gap.max() < TOLERANCE, gap.max()


def test_single_turn_log_probs_match_the_actor(setup):
    config, group, tokenizer = setup
    batch = prompt_batch(tokenizer, 4)
    batch.meta_info["rollout"] = RolloutSettings()
    out = group.generate_sequences(batch)
    assert len(out) == 8  # rollout.n = 2 per prompt
    assert_rollout_log_probs_match(group, out)


def test_multi_turn_log_probs_match_the_actor_with_observations_between_turns(setup, monkeypatch):
    """An untrained policy rarely writes a valid action: the invalid-action notice (mask 0) is
    inserted between its turns, so the actor scores sampled tokens around observation tokens."""
    config, group, tokenizer = setup
    monkeypatch.setattr("zerosearch.generation.build_backend", lambda name, cfg: NoSearch(cfg.topk))
    manager = SearchGenerationManager(config, group, tokenizer)
    batch = prompt_batch(tokenizer, 4)
    batch.meta_info["rollout"] = RolloutSettings(step=1, total_steps=2)
    out = manager.generate_sequences(batch)
    observed = (out.batch["attention_mask"][:, 128:] - out.batch["response_mask"]).sum()
    assert observed > 0 and out.meta_info["metrics"]["search/turns_mean"] > 1
    assert_rollout_log_probs_match(group, out)


class NoteEnv(AgentEnv):
    """Answers every turn with a short note after a delay of its own, so that under ``async`` the
    trajectories come back to the engine at different times and it generates for partial batches."""

    def __init__(self, row: int):
        self.row = row

    def step(self, turn: Turn) -> Step:
        time.sleep(0.2 * (self.row % 4))  # far apart beside the engine's 0.05 s gather window
        return Step([Observation(f"\nnote {self.row}.{turn.index}\n")])


def test_batch_and_async_scheduling_generate_the_same_greedy_trajectories(setup):
    config, group, tokenizer = setup
    batch = prompt_batch(tokenizer, 8)
    mask = batch.batch["attention_mask"].bool()
    prompts_ids = [ids[m].tolist() for ids, m in zip(batch.batch["input_ids"], mask, strict=True)]
    runs, calls = {}, {}
    for scheduling in ("batch", "async"):
        sent = []

        def generate(request, sent=sent):
            sent.append(int(request.batch["attention_mask"].any(dim=1).sum()))
            return group.generate_sequences(request)

        loop = AgentLoop(generate, tokenizer, prompts.SEARCH_STOPS, 8, 80, 12, 3, scheduling=scheduling)
        runs[scheduling] = loop.run(prompts_ids, [NoteEnv(i) for i in range(8)], RolloutSettings(validate=True))
        calls[scheduling] = sent
    assert calls["batch"] == [8, 8, 8, 8] and min(calls["async"]) < 8  # partial batches were generated
    for a, b in zip(runs["batch"].rows, runs["async"].rows, strict=True):
        assert (a.response, a.mask, a.turns) == (b.response, b.mask, b.turns)
        assert np.abs(np.array(a.log_probs) - np.array(b.log_probs)).max() < TOLERANCE


def test_after_an_update_and_a_sync_the_engine_generates_the_new_policy(setup, tmp_path):
    config, group, tokenizer = setup
    batch = prompt_batch(tokenizer, 4)
    batch.meta_info["rollout"] = RolloutSettings(step=1)
    out = group.generate_sequences(batch)
    out = out.union(group.compute_log_prob(out))
    advantages = torch.randn(out.batch["responses"].shape, generator=torch.Generator().manual_seed(0))
    out.batch["advantages"] = advantages * out.batch["response_mask"]
    out.non_tensor_batch["uid"] = np.array([str(i // 2) for i in range(len(out))], dtype=object)
    group.update_actor(out)
    group.sync_rollout_weights()

    greedy = prompt_batch(tokenizer, 2)
    greedy.meta_info["rollout"] = RolloutSettings(validate=True, n=1)
    engine = group.generate_sequences(greedy)
    group.save_checkpoint(str(tmp_path / "actor"))
    updated = AutoModelForCausalLM.from_pretrained(tmp_path / "actor" / "huggingface").eval()
    original = AutoModelForCausalLM.from_pretrained(config.actor_rollout_ref.model.path).eval()

    def greedy_of(model, i: int) -> list[int]:
        prompt = greedy.batch["input_ids"][i][greedy.batch["attention_mask"][i].bool()]
        out = model.generate(prompt[None], max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return out[0, len(prompt) :].tolist()

    sampled = [engine.batch["responses"][i][engine.batch["response_mask"][i].bool()].tolist() for i in range(2)]
    assert all(greedy_of(updated, i)[: len(sampled[i])] == sampled[i] for i in range(2))
    assert any(greedy_of(original, i)[: len(sampled[i])] != sampled[i] for i in range(2))  # the sync changed it
