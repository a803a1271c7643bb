"""The driver's own computations, without workers: the in-reward KL penalty, advantages and where
the old log-probs come from."""

import re

import numpy as np
import pytest
import torch

from verl.algos.core_algos import AdaptiveKLController, FixedKLController
from verl.config import AlgorithmConfig
from verl.protocol import DataProto
from verl.trainer.ray_trainer import apply_kl_penalty, compute_advantage, initial_rewards, old_log_prob_source
from verl.trainer.run import load_config

MASK = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0]])  # row 0: an observation token between sampled ones


def batch(**tensors):
    base = {"response_mask": MASK, "token_level_scores": torch.tensor([[0.0, 0, 0, 1], [0, 0, 0.5, 0]])}
    return DataProto.from_dict(tensors={**base, **tensors}, non_tensors={"uid": np.array(["a", "a"], dtype=object)})


def test_kl_penalty_is_subtracted_on_sampled_tokens_only():
    old = torch.tensor([[-1.0, -2.0, -9.0, -1.0], [-1.0, -1.0, -1.0, -5.0]])
    ref = torch.tensor([[-1.5, -2.0, 0.0, -0.5], [-1.0, -2.0, -1.0, 0.0]])
    data = batch(old_log_probs=old, ref_log_prob=ref)
    initial_rewards(data)
    metrics = apply_kl_penalty(data, FixedKLController(kl_coef=0.1), "kl")
    # k1 = old - ref: row 0: 0.5, 0, (masked), -0.5; row 1: 0, 1, 0, (masked)
    expected = torch.tensor([[-0.05, 0.0, 0.0, 1.05], [0.0, -0.1, 0.5, 0.0]])
    torch.testing.assert_close(data.batch["token_level_rewards"], expected)
    # per-row mean KL over sampled tokens: row 0 (0.5 + 0 - 0.5)/3 = 0, row 1 (0 + 1 + 0)/3; batch mean 1/6
    assert metrics == {"critic/kl": pytest.approx(1 / 6), "critic/kl_coef": 0.1}


def test_adaptive_kl_coefficient_moves_after_the_penalty_is_applied():
    controller = AdaptiveKLController(init_kl_coef=0.2, target_kl=0.01, horizon=10)
    old = torch.zeros(2, 4)
    data = batch(old_log_probs=old, ref_log_prob=old - 1.0)  # KL 1 per token, far above the target
    initial_rewards(data)
    metrics = apply_kl_penalty(data, controller, "kl")
    assert metrics["critic/kl_coef"] == 0.2  # the penalty used the coefficient before the update
    assert controller.value == pytest.approx(0.2 * (1 + 0.2 * 2 / 10))  # error clipped at +0.2, n_steps = 2 rows


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce", "reinforce_plus_plus", "gae"])
def test_compute_advantage_fills_advantages_and_returns(estimator):
    data = batch(token_level_rewards=batch().batch["token_level_scores"], values=torch.full((2, 4), 0.25))
    compute_advantage(data, AlgorithmConfig(adv_estimator=estimator, gamma=1.0, lam=1.0))
    advantages, returns = data.batch["advantages"], data.batch["returns"]
    assert advantages.shape == returns.shape == MASK.shape
    assert torch.all(advantages[MASK == 0] == 0)
    if estimator == "grpo":  # two responses of one prompt, scores 1 and 0.5: ±1/√2 after the group std
        torch.testing.assert_close(advantages[:, 0], torch.tensor([0.7071, -0.7071]), atol=1e-4, rtol=0)
    if estimator == "reinforce":  # the raw return to go, past the observation token
        torch.testing.assert_close(returns[0], torch.tensor([1.0, 1.0, 0.0, 1.0]))


def test_turn_rewards_of_the_rollout_loop_join_the_rewards_and_reach_the_estimator():
    turn_scores = torch.tensor([[0.25, 0.0, 0.0, 0.0], [0.0, -0.25, 0.0, 0.0]])
    data = batch(
        turn_scores=turn_scores,
        turn_graded=(turn_scores != 0).long(),
        turn_ids=torch.tensor([[0, 0, -1, 1], [0, 0, 0, -1]]),
    )
    initial_rewards(data)
    torch.testing.assert_close(data.batch["token_level_rewards"], data.batch["token_level_scores"] + turn_scores)
    compute_advantage(data, AlgorithmConfig(adv_estimator="grpo_turn"))
    # outcome 1 vs 0.5: ±1/sqrt(2) on every sampled token; the raw turn reward (0.25, -0.25) is added
    # on its own turn 0 only, as nothing later is graded; observation and padding tokens stay 0
    expected = torch.tensor([[0.25 + 2**-0.5, 0.25 + 2**-0.5, 0.0, 2**-0.5], [-0.25 - 2**-0.5] * 3 + [0.0]])
    torch.testing.assert_close(data.batch["advantages"], expected, atol=1e-4, rtol=0)


class FailingValidation(RuntimeError):
    pass


# one mini-batch of 8 prompts (rollout.n=1): the update is on-policy unless something else says not
ON_POLICY = ["data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8", "trainer.n_gpus_per_node=2"]


@pytest.mark.parametrize("choice", ["auto", "recompute", "from_update", "from_rollout"])
def test_an_on_policy_step_takes_the_old_log_probs_where_the_choice_says(choice):
    config = load_config([*ON_POLICY, f"algorithm.old_log_prob={choice}"])
    expected = "from_update" if choice == "auto" else choice
    assert old_log_prob_source(config, rows=8, step=1) == expected


@pytest.mark.parametrize(
    "overrides, rows, step",
    [
        ([], 9, 1),  # more responses than one mini-batch
        (["actor_rollout_ref.actor.ppo_epochs=2"], 8, 1),
        (["algorithm.use_kl_in_reward=true"], 8, 1),
        (["trainer.critic_warmup=2"], 8, 2),  # the actor does not update yet
    ],
)
def test_auto_recomputes_the_old_log_probs_when_the_update_is_off_policy(overrides, rows, step):
    for choice in ("auto", "recompute"):
        config = load_config([*ON_POLICY, *overrides, f"algorithm.old_log_prob={choice}"])
        assert old_log_prob_source(config, rows, step) == "recompute"
    config = load_config([*ON_POLICY, *overrides, "algorithm.old_log_prob=from_rollout"])
    assert old_log_prob_source(config, rows, step) == "from_rollout"


def test_auto_takes_the_update_pass_once_the_critic_warm_up_is_over():
    config = load_config([*ON_POLICY, "trainer.critic_warmup=2"])
    assert [old_log_prob_source(config, 8, step) for step in (1, 2, 3)] == ["recompute", "recompute", "from_update"]


@pytest.mark.parametrize(
    "override, reason",
    [
        (
            "data.train_batch_size=16",
            "16 responses make several mini-batches of 8 (actor_rollout_ref.actor.ppo_mini_batch_size)",
        ),
        (
            "actor_rollout_ref.actor.ppo_mini_batch_responses=6",
            "8 responses make several mini-batches of 6 (actor_rollout_ref.actor.ppo_mini_batch_responses)",
        ),
        ("actor_rollout_ref.actor.ppo_epochs=2", "actor_rollout_ref.actor.ppo_epochs=2"),
        ("algorithm.use_kl_in_reward=true", "algorithm.use_kl_in_reward=true"),
        ("trainer.critic_warmup=1", "trainer.critic_warmup=1"),
    ],
)
def test_from_update_is_refused_when_the_config_makes_the_update_off_policy(override, reason):
    overrides = [*ON_POLICY, override, "algorithm.old_log_prob=from_update"]
    with pytest.raises(
        ValueError, match=rf"algorithm.old_log_prob=from_update .*{re.escape(reason)}.*old_log_prob=auto"
    ):
        load_config(overrides)


def test_from_update_in_a_step_that_is_not_on_policy_is_an_error_not_a_recompute():
    config = load_config([*ON_POLICY, "algorithm.old_log_prob=from_update"])
    with pytest.raises(
        ValueError, match=r"algorithm.old_log_prob=from_update .* but in step 3, 9 responses make several"
    ):
        old_log_prob_source(config, rows=9, step=3)


def test_verl_bypass_mode_means_the_old_log_probs_come_from_the_rollout():
    bypass = "algorithm.rollout_correction.bypass_mode=true"
    for choice in ("auto", "from_rollout"):
        config = load_config([*ON_POLICY, bypass, f"algorithm.old_log_prob={choice}"])
        assert old_log_prob_source(config, rows=8, step=1) == "from_rollout"  # on-policy or not
        assert old_log_prob_source(config, rows=9, step=1) == "from_rollout"
    for choice in ("recompute", "from_update"):
        with pytest.raises(ValueError, match=f"bypass_mode=true .* contradicts algorithm.old_log_prob={choice}"):
            load_config([*ON_POLICY, bypass, f"algorithm.old_log_prob={choice}"])


def test_a_step_is_saved_before_it_is_validated(tmp_path):
    """A validation that fails at a step that is also a save step must not lose that step."""
    from verl.config import PPOConfig
    from verl.trainer.ray_trainer import RayPPOTrainer

    config = PPOConfig()
    config.trainer.test_freq = config.trainer.save_freq = 2
    config.trainer.val_before_train = False
    config.trainer.logger = ["file"]
    config.trainer.default_local_dir = str(tmp_path)
    trainer = RayPPOTrainer.__new__(RayPPOTrainer)  # the loop alone: no workers
    saved, steps = [], []

    class Batches:
        epoch = 0

        def __next__(self):
            return None

    def validate():
        if trainer.global_steps == 4:
            raise FailingValidation("the search engine went away")
        return {"val/score": 0.5}

    trainer.__dict__.update(
        config=config,
        val_dataset=object(),
        global_steps=0,
        total_training_steps=6,
        train_batches=Batches(),
        load_checkpoint=lambda: None,
        train_step=lambda batch: steps.append(trainer.global_steps) or {},
        validate=validate,
        save_checkpoint=lambda: saved.append(trainer.global_steps),
    )
    with pytest.raises(FailingValidation):
        trainer.fit()
    assert steps == [1, 2, 3, 4] and saved == [2, 4]
