import numpy as np
import pytest
import torch

from verl.protocol import DataProto
from verl.trainer.metrics import (
    compute_data_metrics,
    compute_rollout_log_prob_metrics,
    compute_throughput_metrics,
    reward_extra_metrics,
)


def test_rollout_log_prob_gap_counts_sampled_tokens_only():
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0]])
    rollout = torch.tensor([[-1.0, -2.0, 0.0, -0.5], [-3.0, 0.0, 0.0, 0.0]])
    # the observation (mask 0) at [0, 2] differs by 9: it must not count
    old = torch.tensor([[-1.5, -2.0, -9.0, -0.25], [-1.0, -4.0, -4.0, -4.0]])
    batch = DataProto.from_dict(tensors={"response_mask": mask, "rollout_log_probs": rollout, "old_log_probs": old})
    metrics = compute_rollout_log_prob_metrics(batch)
    # gaps on sampled tokens: 0.5, 0, 0.25, 2.0
    assert metrics == {"rollout/log_prob_diff_mean": pytest.approx(2.75 / 4), "rollout/log_prob_diff_max": 2.0}


def test_rollout_log_prob_gap_needs_rollout_log_probs():
    batch = DataProto.from_dict(tensors={"response_mask": torch.ones(1, 2), "old_log_probs": torch.zeros(1, 2)})
    assert compute_rollout_log_prob_metrics(batch) == {}


def test_data_metrics_count_sampled_tokens_and_the_response_span():
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0]])  # row 0: an observation token inside the response
    span = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    batch = DataProto.from_dict(
        tensors={
            "prompts": torch.zeros(2, 3, dtype=torch.long),
            "responses": torch.zeros(2, 4, dtype=torch.long),
            "response_mask": mask,
            "attention_mask": torch.cat([torch.tensor([[0, 1, 1], [1, 1, 1]]), span], dim=1),
            "token_level_scores": torch.tensor([[0.0, 0, 0, 1], [0.5, 0, 0, 0]]),
            "token_level_rewards": torch.tensor([[0.0, 0, 0, 0.9], [0.5, 0, 0, 0]]),
            "advantages": torch.tensor([[1.0, 1.0, 0.0, 1.0], [-1.0, 0, 0, 0]]),
            "returns": torch.tensor([[1.0, 1.0, 0.0, 1.0], [-1.0, 0, 0, 0]]),
            "entropys": torch.tensor([[2.0, 2.0, 9.0, 2.0], [1.0, 9.0, 9.0, 9.0]]),
        }
    )
    metrics = compute_data_metrics(batch, use_critic=False)
    assert metrics["reward/score/mean"] == pytest.approx(0.75) and metrics["reward/reward/max"] == pytest.approx(0.9)
    assert metrics["critic/advantages/mean"] == pytest.approx(2 / 4)  # over the 4 sampled tokens
    assert metrics["response_length/mean"] == 2.5 and metrics["response_length/clip_ratio"] == 0.5
    assert metrics["response_length/sampled_tokens_mean"] == 2.0
    assert metrics["prompt_length/mean"] == 2.5
    assert metrics["actor/entropy"] == pytest.approx(7 / 4)  # sampled tokens only
    throughput = compute_throughput_metrics(batch, step_seconds=2.0, world_size=2)
    assert throughput == {"perf/total_num_tokens": 10, "perf/time_per_step": 2.0, "perf/throughput": 2.5}


def test_reward_extra_metrics_average_numbers_and_skip_text():
    extra = {"score": np.array([1.0, 0.0]), "answered": np.array([True, True]), "pred": np.array(["a", "b"])}
    assert reward_extra_metrics("reward", extra) == {"reward/score/mean": 0.5, "reward/answered/mean": 1.0}
