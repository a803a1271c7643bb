import pytest
import torch

from verl.protocol import DataProto
from verl.trainer.metrics import compute_rollout_log_prob_metrics


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
