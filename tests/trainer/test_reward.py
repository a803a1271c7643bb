"""The engine's rule-based reward manager: a user's compute_score on each response's text."""

import numpy as np
import pytest
import torch

from verl.config import PPOConfig
from verl.protocol import DataProto
from verl.trainer.reward import RuleRewardManager, last_valid_positions
from verl.utils.tiny_model import build_tokenizer

SCORE = """
def compute_score(data_source, solution_str, ground_truth, extra_info):
    hit = float(ground_truth in solution_str)
    return {"score": hit, "length": len(solution_str), "source": data_source + str(extra_info["index"])}
"""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([], 400)


def test_last_valid_positions():
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    assert last_valid_positions(mask).tolist() == [3, 0, 0]


def test_scores_land_on_the_last_sampled_token_with_the_functions_extras(tmp_path, tokenizer):
    (tmp_path / "score.py").write_text(SCORE)
    config = PPOConfig()
    config.custom_reward_function.path = str(tmp_path / "score.py")
    texts = ["it is Paris", "no idea"]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, ids)) + 2
    responses = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, row in enumerate(ids):
        responses[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    batch = DataProto.from_dict(
        tensors={
            "prompts": torch.zeros(2, 2, dtype=torch.long),
            "responses": responses,
            "response_mask": mask,
            "attention_mask": torch.cat([torch.ones(2, 2, dtype=torch.long), mask], dim=1),
        },
        non_tensors={
            "data_source": ["nq", "nq"],
            "reward_model": [{"ground_truth": "Paris"}] * 2,
            "extra_info": [{"index": 0}, {"index": 1}],
        },
    )
    scores, extra = RuleRewardManager(config, tokenizer)(batch)
    assert scores[0, len(ids[0]) - 1] == 1.0 and scores.sum() == 1.0
    np.testing.assert_array_equal(extra["score"], [1.0, 0.0])
    assert extra["length"].tolist() == [len(t) for t in texts] and extra["source"].tolist() == ["nq0", "nq1"]


def test_a_missing_reward_function_is_named(tokenizer):
    with pytest.raises(ValueError, match="custom_reward_function.path is not set"):
        RuleRewardManager(PPOConfig(), tokenizer)
